"""Participant-level prediction: every selected bundle on one scan's features, as a table."""

from __future__ import annotations

import math

import pandas as pd

from ..preprocessing.qc import UNTRUSTWORTHY_FLAGS
from .bundle import CONTRACT_DEFAULTS, Bundle
from .inputs import ScanFeatures

# Finer inputs are downsampled to the working grid; coarser ones cannot regain its detail (3 mm
# copies of 2 mm IXI scans moved the default by 4 years, docs/benchmarks.md).
COARSER_VOXELS_RATIO = 1.25
# How far a scan's GM/WM peak ratio may lie outside the training scans' range unflagged: copies
# of the same scan (resampled, oblique, cropped, noisy) moved it by up to 0.046 on 3 IXI scans,
# where the 127 training scans spread with an SD of 0.020 (docs/benchmarks.md, round 11).
CONTRAST_TOLERANCE = 0.05
# How far a scan's GM/WM contrast-to-noise ratio may fall below the training scans' lowest
# unflagged, as a fraction of it: copies of 3 IXI scans (resampled, oblique, cropped, 3 % noise,
# gamma) lowered it by up to 13 %. More noise lowers it further and pulls the age towards the
# training mean: 10 % noise, CNR 5.7 -> 1.8, moved a 27-year-old by +6.1 y and a 75-year-old by
# -7.1 y (docs/benchmarks.md, round 12).
CNR_TOLERANCE = 0.15

BRAINAGE_COLUMNS = {
    "model": {"Description": "Name of the model bundle"},
    "model_kind": {"Description": "Kind of model (hist-linear, tissue-linear, ensemble, ...)"},
    "model_version": {"Description": "bids_brainage version that trained the bundle"},
    "predicted_age": {"Description": "Predicted (brain) age", "Units": "year"},
    "interval_lower": {"Description": "Lower end of the prediction interval", "Units": "year"},
    "interval_upper": {"Description": "Upper end of the prediction interval", "Units": "year"},
    "interval_coverage": {
        "Description": "Nominal coverage of the split-conformal interval, from the bundle's "
        "out-of-fold errors in cross-validation"
    },
    "chronological_age": {"Description": "Age from participants.tsv (n/a if unknown)",
                          "Units": "year"},
    "brain_pad": {"Description": "Brain predicted age difference, predicted_age - "
                  "chronological_age, without bias correction (see the group level)",
                  "Units": "year"},
    "flags": {"Description": "Why this prediction may not hold (n/a: none)",
              "Levels": {
                  "age_outside_training_range": "chronological age outside the ages the model "
                                                "was trained on",
                  "prediction_outside_training_range": "predicted age outside those ages",
                  "failed_qc": "preprocessing failed QC (registration, brain volume, tissue "
                               "fractions): the features are not trustworthy",
                  "unlike_training_contrast": "grey/white-matter contrast unlike a T1w scan "
                                              "(GM/WM peak ratio above 0.92)",
                  "contrast_outside_training_range": "GM/WM intensity-peak ratio more than "
                                                     f"{CONTRAST_TOLERANCE:g} outside the range "
                                                     "of the model's training scans",
                  "contrast_to_noise_below_training_range": "GM/WM contrast-to-noise ratio "
                                                            "more than "
                                                            f"{CNR_TOLERANCE:.0%} below the "
                                                            "lowest of the model's training "
                                                            "scans: noise pulls the prediction "
                                                            "towards the training mean",
                  "voxels_coarser_than_training": "the input's largest voxel edge is over 1.25 "
                                                  "times the model's working grid: detail the "
                                                  "model learnt from is missing",
              }},
}  # fmt:skip


ROI_COLUMNS = {
    "roi": {"Description": "Harvard-Oxford region, or 'Whole brain' (the global average)"},
    "n_voxels": {"Description": "Template voxels in the region"},
    "mean_local_brainage": {"Description": "Mean local brain age in the region", "Units": "year"},
    "mean_local_pad": {"Description": "Mean local brain-PAD (local brain age - chronological "
                       "age), uncorrected; n/a without an age", "Units": "year"},
}  # fmt:skip


def prediction_flags(card: dict, age: float | None, predicted: float, qc_flags=(),
                     preprocessing: dict | None = None, voxel_mm=None,
                     peak_ratio: float | None = None,
                     cnr: float | None = None) -> list[str]:  # fmt:skip
    """What makes one prediction doubtful: ages outside the training range, failed QC, a
    contrast unlike T1w or a GM/WM peak ratio (``peak_ratio``) outside the training scans'
    range, a GM/WM contrast-to-noise ratio (``cnr``) below theirs, an input that came
    skull-stripped (unless N4 ran again inside the brain), preprocessing
    (``brain_extraction``, ``field_of_view``, ``intensity_scale``, ``stripped_n4_grid``,
    ``denoising``, ``contrast_standardisation``, ``bias_correction``)
    unlike the training scans', input voxels
    (``voxel_mm``, per axis) coarser than the working grid.
    """
    flags = []
    ages = card.get("training_data", {}).get("age", {})
    low, high = ages.get("min"), ages.get("max")
    if low is not None and high is not None:
        if age is not None and not low <= age <= high:
            flags.append("age_outside_training_range")
        if not low <= predicted <= high:
            flags.append("prediction_outside_training_range")
    qc_flags = set(qc_flags)
    if qc_flags & (UNTRUSTWORTHY_FLAGS - {"unlike_t1w_contrast"}):
        flags.append("failed_qc")
    if "unlike_t1w_contrast" in qc_flags:
        flags.append("unlike_training_contrast")
    ratios = card.get("training_data", {}).get("contrast", {}).get("gm_wm_peak_ratio", {})
    if (
        peak_ratio is not None
        and ratios
        and not (
            ratios["min"] - CONTRAST_TOLERANCE <= peak_ratio <= ratios["max"] + CONTRAST_TOLERANCE
        )
    ):
        # the ratio follows the segmentation: on the log scale IXI175's was 0.91 (training
        # 0.61-0.74) and a log-scale model read it 37 y young (docs/benchmarks.md, round 10)
        flags.append("contrast_outside_training_range")
    lowest_cnr = card.get("training_data", {}).get("contrast", {}).get("cnr_gm_wm", {}).get("min")
    if cnr is not None and not math.isnan(cnr) and lowest_cnr is not None:
        if cnr < (1 - CNR_TOLERANCE) * lowest_cnr:
            flags.append("contrast_to_noise_below_training_range")
    stripped_alike = (preprocessing or {}).get("bias_correction") == "brain"
    if "skull_stripped_input" in qc_flags and not stripped_alike:
        # N4 inside the head: stripped copies of 7 held-out IXI scans moved the age by up to
        # 7.7 y (9.1 aligned to MNI). N4 again inside the brain takes a head and its stripped
        # brain down one path: 2.1 y at most over 10 scans (docs/benchmarks.md, rounds 8, 18)
        flags.append("skull_stripped_input")
    contract = card.get("contract", {})
    for key, used in (preprocessing or {}).items():
        trained_with = contract.get(key, CONTRACT_DEFAULTS.get(key))
        if used and trained_with and used != trained_with:
            flags.append(f"{key}_unlike_training")
    working = contract.get("working_voxel_mm")
    if voxel_mm is not None and working and max(voxel_mm) > COARSER_VOXELS_RATIO * working:
        flags.append("voxels_coarser_than_training")
    return flags


def predict_table(bundles: list[Bundle], features: ScanFeatures, age: float | None,
                  qc_flags=(), preprocessing: dict | None = None, voxel_mm=None,
                  peak_ratio: float | None = None, cnr: float | None = None):  # fmt:skip
    """One row per bundle: prediction, conformal interval, chronological age, brain-PAD and
    the flags that make the prediction doubtful.
    """
    rows = []
    for bundle in bundles:
        predicted = bundle.predict_scan(features)
        halfwidth = bundle.halfwidth
        known = age is not None and not (isinstance(age, float) and math.isnan(age))
        flags = prediction_flags(bundle.card, age if known else None, predicted, qc_flags,
                                 preprocessing, voxel_mm, peak_ratio, cnr)  # fmt:skip
        rows.append({
            "model": bundle.name,
            "model_kind": bundle.kind,
            "model_version": bundle.card.get("version"),
            "predicted_age": round(predicted, 2),
            "interval_lower": round(predicted - halfwidth, 2),
            "interval_upper": round(predicted + halfwidth, 2),
            "interval_coverage": bundle.card["interval"]["coverage"],
            "chronological_age": age if known else None,
            "brain_pad": round(predicted - age, 2) if known else None,
            "flags": ",".join(flags) or None,
        })  # fmt:skip
    return pd.DataFrame(rows, columns=list(BRAINAGE_COLUMNS))
