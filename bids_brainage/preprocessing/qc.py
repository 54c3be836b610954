"""QC flags from the facts each preprocessing step reports."""

from __future__ import annotations

from .anatomical import intensity_setting

PLAUSIBLE_BRAIN_ML = (700.0, 2300.0)
PLAUSIBLE_GM_FRACTION = (0.25, 0.65)
MAX_MODULATION_ERROR = 0.05
# T1w contrast: grey matter darker than white matter. IXI T1w scans have GM/WM peak ratios of
# about 0.7-0.8; near or above 1 is a T2w, FLAIR or failed segmentation given as T1w.
MAX_T1W_GM_WM_PEAK_RATIO = 0.92
# Flags after which a scan's features, and any prediction from them, are not to be trusted.
UNTRUSTWORTHY_FLAGS = frozenset(
    {"registration_failed", "implausible_brain_volume", "implausible_tissue_fractions",
     "unlike_t1w_contrast"}
)  # fmt:skip


def gm_wm_peak_ratio(measures: dict) -> float | None:
    """Grey- over white-matter intensity peak of the N4-corrected T1w (None if not measured)."""
    gm_peak, wm_peak = measures.get("gm_peak"), measures.get("wm_peak")
    if gm_peak is None or not wm_peak:
        return None
    return float(gm_peak) / float(wm_peak)


def preprocessing_choices(qc: dict) -> dict[str, str]:
    """The contract's preprocessing choices as a scan's QC records them. A run from before a
    choice existed made what bundles trained before it expect (``CONTRACT_DEFAULTS``).
    """
    segmentation = qc.get("segmentation", {}).get("intensity_scale", "linear")
    # a registration QC without the key came from a run that registered as it segmented
    registration = qc.get("registration", {}).get("intensity_scale", segmentation)
    return {
        "brain_extraction": qc.get("brain_extraction", {}).get("method", "template"),
        "field_of_view": qc.get("conform", {}).get("field_of_view", "stored"),
        "intensity_scale": intensity_setting(registration, segmentation),
        "stripped_n4_grid": qc.get("n4", {}).get("stripped_grid", "brain"),
        "denoising": qc.get("n4", {}).get("denoise", "none"),
        "contrast_standardisation": qc.get("n4", {}).get("contrast", "none"),
        "bias_correction": qc.get("n4", {}).get("bias_correction", "head"),
    }


def derive_flags(steps: dict[str, dict]) -> list[str]:
    """Sorted flags: a reviewer reads these first; ``registration_failed`` and
    ``implausible_brain_volume`` mean the scan's features should not be trusted.
    """
    flags = set(steps.get("conform", {}).get("flags", []))
    brain = steps.get("brain_extraction", {})
    if brain.get("skull_stripped_input"):
        flags.add("skull_stripped_input")
    if brain.get("touches_field_of_view_edge"):
        flags.add("cropped_field_of_view")
    volume = brain.get("brain_mask_ml")
    if volume is not None and not PLAUSIBLE_BRAIN_ML[0] <= volume <= PLAUSIBLE_BRAIN_ML[1]:
        flags.add("implausible_brain_volume")
    if steps.get("registration", {}).get("registration_failed"):
        flags.add("registration_failed")
    gm_fraction = steps.get("measures", {}).get("gm_fraction")
    if (
        gm_fraction is not None
        and not PLAUSIBLE_GM_FRACTION[0] <= gm_fraction <= PLAUSIBLE_GM_FRACTION[1]
    ):
        flags.add("implausible_tissue_fractions")
    ratio = gm_wm_peak_ratio(steps.get("measures", {}))
    if ratio is not None and ratio > MAX_T1W_GM_WM_PEAK_RATIO:
        flags.add("unlike_t1w_contrast")
    ratios = [v for k, v in steps.get("template_maps", {}).items() if k.endswith("volume_ratio")]
    if any(abs(r - 1) > MAX_MODULATION_ERROR for r in ratios):
        flags.add("modulation_inaccurate")
    return sorted(flags)
