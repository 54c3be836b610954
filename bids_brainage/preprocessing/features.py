"""Per-scan features: tissue volumes, normalised intensities, histogram, template-space maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..utils.templates import TISSUES
from .intensity import brain_histogram, normalise_v1, normalise_v2, tissue_peaks

CORE_PROBABILITY = 0.9  # voxels this sure of their class define the tissue peaks


def tissue_volumes(probabilities: dict[str, np.ndarray], voxel_ml: float) -> dict[str, float]:
    """Volumes (ml) of CSF, GM, WM, their sum (total intracranial volume) and fractions of it."""
    volumes = {f"{t.lower()}_ml": float(probabilities[t].sum() * voxel_ml) for t in TISSUES}
    tiv = sum(volumes.values())
    if tiv <= 0:
        raise ValueError("segmentation is empty: total intracranial volume is 0")
    out = {**volumes, "tiv_ml": tiv}
    out.update({f"{t.lower()}_fraction": volumes[f"{t.lower()}_ml"] / tiv for t in TISSUES})
    return out


def normalised_brains(
    image: np.ndarray, brain_mask: np.ndarray, probabilities: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, dict]:
    """v1 and v2 normalised brains (zero outside the mask) and the peaks they were built on."""
    brain = np.asarray(brain_mask, dtype=bool)
    gm_core = brain & (probabilities["GM"] > CORE_PROBABILITY)
    wm_core = brain & (probabilities["WM"] > CORE_PROBABILITY)
    gm_peak, wm_peak = tissue_peaks(image, gm_core, wm_core)
    v1 = np.where(brain, normalise_v1(image, wm_peak), 0).astype(np.float32)
    v2 = np.where(brain, normalise_v2(image, gm_peak, wm_peak), 0).astype(np.float32)
    return v1, v2, {"gm_peak": gm_peak, "wm_peak": wm_peak}


def histogram_table(v2: np.ndarray, brain_mask: np.ndarray):
    """The 200-bin v2 histogram as a long table (one row per bin) and the out-of-range share."""
    import pandas as pd

    fractions, edges, outside = brain_histogram(v2, brain_mask)
    table = pd.DataFrame(
        {"bin": np.arange(fractions.size), "lower": edges[:-1], "upper": edges[1:],
         "fraction": fractions}
    )  # fmt:skip
    return table, outside


def modulate(warped_probability: np.ndarray, jacobian: np.ndarray) -> np.ndarray:
    """Jacobian modulation: template-space values that sum to native-space volume."""
    return (warped_probability * jacobian).astype(np.float32)


def template_space_maps(
    reference: Path,
    probability_files: dict[str, Path],
    image_files: dict[str, Path],
    forward: list[str],
    work: Path,
) -> dict[str, Path]:
    """Warp native maps onto the template grid; tissue maps are modulated by the Jacobian.

    Returns the files written in ``work``: ``{tissue}_modulated``, ``{name}`` for each image,
    ``composite_warp`` (one displacement field, template → native) and ``jacobian``.
    """
    import ants

    fixed = ants.image_read(str(reference))
    composite = ants.apply_transforms(fixed, fixed, forward, compose=str(work / "composite_"))
    jacobian = ants.create_jacobian_determinant_image(fixed, composite, do_log=False).numpy()
    out = {"composite_warp": Path(composite), "jacobian": work / "jacobian.nii.gz"}
    ants.image_write(fixed.new_image_like(jacobian.astype(np.float32)), str(out["jacobian"]))
    for tissue, path in probability_files.items():
        warped = ants.apply_transforms(fixed, ants.image_read(str(path)), forward, "linear")
        target = work / f"{tissue}_modulated.nii.gz"
        ants.image_write(fixed.new_image_like(modulate(warped.numpy(), jacobian)), str(target))
        out[f"{tissue}_modulated"] = target
    for name, path in image_files.items():
        warped = ants.apply_transforms(fixed, ants.image_read(str(path)), forward, "linear")
        target = work / f"{name}.nii.gz"
        ants.image_write(warped, str(target))
        out[name] = target
    return out


def contrast_quality(
    image: np.ndarray, brain_mask: np.ndarray, probabilities: dict[str, np.ndarray]
) -> dict[str, float]:
    """SNR of white matter (mean / SD inside it) and GM-WM contrast-to-noise ratio."""
    brain = np.asarray(brain_mask, dtype=bool)
    gm = image[brain & (probabilities["GM"] > CORE_PROBABILITY)]
    wm = image[brain & (probabilities["WM"] > CORE_PROBABILITY)]
    if gm.size < 10 or wm.size < 10:
        return {"snr_wm": float("nan"), "cnr_gm_wm": float("nan")}
    noise = np.sqrt((gm.var() + wm.var()) / 2)
    return {
        "snr_wm": round(float(wm.mean() / max(wm.std(), 1e-6)), 3),
        "cnr_gm_wm": round(float((wm.mean() - gm.mean()) / max(noise, 1e-6)), 3),
    }
