"""Group results → files: the scans table, statistics tables and maps, each with a sidecar
describing every column, written through the derivatives writer into the staged group tree.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ..utils.derivatives import write_derivative
from ..utils.tables import write_tsv, year_columns
from .collect import SCAN_COLUMNS
from .statistics import IMPORTANCE_MAPS, GroupResults, VoxelMaps

MODEL_COLUMNS = {
    "predicted_age": ("Predicted age of model {model}", "year"),
    "interval_lower": ("Lower end of the prediction interval of model {model}", "year"),
    "interval_upper": ("Upper end of the prediction interval of model {model}", "year"),
    "brain_pad": ("Brain-PAD (predicted - chronological age) of model {model}, uncorrected",
                  "year"),
    "brain_pad_corrected": ("Brain-PAD of model {model} after the age-bias correction "
                            "(see group_desc-bias_stats.tsv)", "year"),
    "predicted_age_corrected": ("Chronological age + corrected brain-PAD, model {model}",
                                "year"),
    "calibration": ("How the scan's site was calibrated for model {model}: site line, site "
                    "offset (its own controls), or pooled (too few controls at the site: its "
                    "scanner offset is not removed; see group_desc-sitecalibration_stats.tsv)",
                    None),
    "normative_lower": ("Lower end of the 90 % range of model {model}'s prediction for a healthy "
                        "person of this age at this site (split-conformal on the site's "
                        "controls; n/a where the site has too few)", "year"),
    "normative_upper": ("Upper end of that range", "year"),
}  # fmt:skip
SITE_COLUMNS = {
    "model": "Model bundle",
    "site": "Acquisition site",
    "mode": "site line (own slope and intercept, controls spanning >= 20 y), site offset "
            "(pooled slope, own intercept) or pooled (fewer than 20 controls)",
    "n_controls": "Controls with an age at this site (one scan each)",
    "age_span": "Range of the controls' ages (years)",
    "alpha": "Slope of the bias line used at this site",
    "beta": "Intercept of the bias line used at this site (years)",
    "offset": "Mean PAD of the site's controls around the pooled line (years)",
    "offset_se": "Standard error of that offset, SD / sqrt(n) (years)",
    "slope_se": "Standard error of the site's own slope (site line only)",
    "interval_halfwidth": "Split-conformal 90 % half-width of the corrected PAD of the site's "
                          "controls (years)",
    "note": "What was done and why",
}  # fmt:skip

STATS_COLUMNS = {
    "model": "Model bundle whose predictions are compared",
    "measure": "brain_pad_corrected (after bias correction) or brain_pad (uncorrected)",
    "roi": "Harvard-Oxford region (ROI tables only)",
    "group1": "First group", "group2": "Second group",
    "n1": "Participants in group1 (one scan each)", "n2": "Participants in group2",
    "mean1": "Mean of group1 (years)", "mean2": "Mean of group2 (years)",
    "sd1": "Standard deviation of group1 (years)", "sd2": "Standard deviation of group2 (years)",
    "difference": "mean1 - mean2 (years)",
    "difference_ci_low": "Lower end of the 95 % CI of the difference (years; Welch)",
    "difference_ci_high": "Upper end of the 95 % CI of the difference (years; Welch)",
    "t": "Welch's t (seed 002 Eq. 1)",
    "df": "Welch-Satterthwaite degrees of freedom (seed 002 Eq. 2)",
    "p": "Two-sided p of Welch's t",
    "p_bonferroni": "p, Bonferroni-corrected over the comparisons of this model and measure",
    "p_fdr": "p, Benjamini-Hochberg FDR over the comparisons of this model and measure",
    "cohens_d": "Cohen's d, (mean1 - mean2) / pooled SD with pooled variance "
                "((n1-1) var1 + (n2-1) var2) / (n1 + n2 - 2)",
}  # fmt:skip
ROI_SUMMARY_COLUMNS = {
    "roi": "Harvard-Oxford region",
    "n": "Participants with an age and an ROI value (one scan each)",
    "mean_local_brainage": "Mean over participants of the ROI's mean local brain age (years)",
    "mean_local_pad": "Mean local brain-PAD (ROI mean local brain age - age), uncorrected (years)",
    "sd_local_pad": "Standard deviation of the local brain-PAD (years)",
    "mae_local": "Mean absolute local brain-PAD (years)",
    "r_age": "Pearson r of the ROI's local brain age with chronological age",
    "n_reference": "Reference participants the ROI's bias line is fitted on",
    "measure": "What the ROI group comparisons use: local_pad_corrected or local_pad",
}
BIAS_COLUMNS = {
    "model": "Model bundle",
    "form": "age: PAD = alpha * age + beta (seed 002 Eq. 6-7); predicted: PAD = alpha * "
            "predicted age + beta (Eq. 8)",
    "alpha": "Slope of the fitted bias line", "beta": "Intercept of the fitted bias line (years)",
    "n_reference": "Scans in the reference set", "reference": "What the reference set is",
    "pad_age_r_reference_before": "Pearson r of PAD with age in the reference set, uncorrected",
    "pad_age_r_reference_after": "The same after correction",
    "n_controls": "Controls in this dataset, one scan each (everyone when participants.tsv has "
                  "no group column)",
    "pad_age_r_controls_before": "Pearson r of PAD with age in the controls, uncorrected",
    "pad_age_r_controls_after": "The same after correction",
    "mae_controls": "Mean absolute error on the controls, uncorrected (years)",
    "r_controls": "Pearson r of predicted with chronological age, controls, uncorrected",
    "r2_controls": "R^2 of the predictions on the controls, uncorrected",
}  # fmt:skip
ROC_COLUMNS = {
    "model": "Model bundle", "measure": "Score used (corrected brain-PAD)",
    "group": "Patient group, tested against the controls",
    "n_patients": "Participants in the group", "n_controls": "Controls",
    "auc": "ROC-AUC of the score for the group against the controls",
    "auc_ci_low": "2.5th percentile of 2000 stratified bootstrap AUCs",
    "auc_ci_high": "97.5th percentile of 2000 stratified bootstrap AUCs",
}  # fmt:skip
RELIABILITY_COLUMNS = {
    "model": "Model bundle",
    "pairs": "Rescan pairs used: all, within-site or between-site",
    "n_targets": "Participants with two scans", "n_raters": "Scans per participant (2)",
    "icc": "ICC(2,1) of predicted age (Shrout & Fleiss 1979: two-way random, absolute "
           "agreement, single measurement)",
    "icc_ci_low": "Lower end of the 95 % CI (McGraw & Wong 1996)",
    "icc_ci_high": "Upper end of the 95 % CI (McGraw & Wong 1996)",
    "mean_difference": "Bland-Altman mean difference, second - first scan (years)",
    "loa_low": "Lower 95 % limit of agreement (years)",
    "loa_high": "Upper 95 % limit of agreement (years)",
}  # fmt:skip


def model_columns(model: str) -> dict:
    return {f"{model}_{name}": {"Description": text.format(model=model),
                                **({"Units": unit} if unit else {})}
            for name, (text, unit) in MODEL_COLUMNS.items()}  # fmt:skip


class GroupWriter:
    """Writes group files under ``root`` (the staging tree that replaces OUTPUT_DIR's group
    outputs at the end), each first made in ``staging`` and then copied under its BIDS name.
    """

    def __init__(self, root: Path, staging: Path):
        self.root, self.staging = Path(root), Path(staging)
        self.staging.mkdir(parents=True, exist_ok=True)

    def _commit(self, staged: Path, suffix: str, meta: dict, **entities) -> Path:
        extension = ".nii.gz" if staged.name.endswith(".nii.gz") else staged.suffix
        ents = {k: v for k, v in entities.items() if v}
        written, _ = write_derivative(self.root, {**ents, "suffix": suffix,
                                                  "extension": extension},
                                      in_file=staged, meta=meta)  # fmt:skip
        return written

    def scans(self, table: pd.DataFrame, columns: dict) -> Path:
        """``group/group_scans.tsv`` and its column sidecar."""
        staged = self.staging / "scans.tsv"
        table = table[[c for c in table.columns if c in columns]]
        write_tsv(table, staged, year_columns(columns))
        return self._commit(staged, "scans", {k: v for k, v in columns.items()
                                              if k in table.columns})  # fmt:skip

    def stats(self, table: pd.DataFrame, desc: str, columns: dict) -> Path:
        table = table[[c for c in columns if c in table.columns]]
        staged = self.staging / f"{desc}_stats.tsv"
        write_tsv(table, staged, year_columns(columns))
        meta = {c: {"Description": d} for c, d in columns.items() if c in table.columns}
        return self._commit(staged, "stats", meta, desc=desc)

    def maps(self, found: VoxelMaps, sources: str = "local brain-age maps of the participant "
             "level (*_desc-local_brainage)") -> list[Path]:  # fmt:skip
        written = []
        for desc, volume in found.maps.items():
            staged = self.staging / f"{desc}_statmap.nii.gz"
            nib.Nifti1Image(np.nan_to_num(volume).astype(np.float32),
                            found.affine).to_filename(staged)  # fmt:skip
            meta = {"Description": map_description(desc), "Sources": sources,
                    "NumberOfMaps": found.n_maps}  # fmt:skip
            if found.n_pairs is not None:
                meta["RescanPairs"] = found.n_pairs
            if desc == "agebias":
                meta.update(AgeBins=found.bias_bins, ReferenceMapsPerBin=found.bias_counts)
            written.append(self._commit(staged, "statmap", meta, space=found.space,
                                        resolution=found.resolution, desc=desc))  # fmt:skip
        return written


def write_group_outputs(results: GroupResults, writer: GroupWriter) -> list[Path]:
    """Every group table and map of ``results``; returns the files, the scans table first."""
    columns = dict(SCAN_COLUMNS)
    for model in results.model_names:
        columns.update(model_columns(model))
    written = [writer.scans(results.scans, columns)]
    analyses = list(results.models.values())
    if analyses:
        tables = {
            "bias": (pd.DataFrame([a.bias_summary for a in analyses]), BIAS_COLUMNS),
            "groups": (pd.concat([a.comparisons for a in analyses]), STATS_COLUMNS),
            "roc": (pd.concat([a.roc for a in analyses]), ROC_COLUMNS),
            "reliability": (pd.concat([a.reliability for a in analyses]), RELIABILITY_COLUMNS),
            "sitecalibration": (pd.concat([a.sites for a in analyses]), SITE_COLUMNS),
        }
        for desc, (table, described) in tables.items():
            if not table.empty and set(table.columns) != {"model"}:
                written.append(writer.stats(table, desc, described))
    if results.roi_summary is not None:
        written.append(writer.stats(results.roi_summary, "roisummary", ROI_SUMMARY_COLUMNS))
    if results.roi is not None and not results.roi.empty:
        written.append(writer.stats(results.roi, "roi", STATS_COLUMNS))
    if results.voxelwise is not None:
        written += writer.maps(results.voxelwise)
    for method, maps in results.importance.items():
        written += writer.maps(maps, f"{method} maps of the participant level "
                               f"(*_desc-{method}_brainage)")  # fmt:skip
    return written


def map_description(desc: str) -> str:
    for prefix, measure in IMPORTANCE_MAPS.values():
        importance = {
            prefix: f"Population importance: mean over participants of {measure}",
            f"{prefix}under30": f"Mean {measure} in participants under 30",
            f"{prefix}over60": f"Mean {measure} in participants over 60",
            f"{prefix}top10": "Top 10 % voxels of the population importance map after Gaussian "
                              "smoothing (sigma 1 voxel), seed 003; 1 inside, 0 outside",
        }  # fmt:skip
        if desc in importance:
            return importance[desc]
    if desc == "agebias":
        return (
            "Mean local brain-PAD of the reference participants per 5-year age bin (seed 002 "
            "§2.6.2), one volume per bin; subtracted voxel-wise before the group tests"
        )
    if desc == "icc":
        return "ICC(2,1) of local brain age over the rescan pairs, per voxel"
    stat = {"t": "Welch's t", "cohensd": "Cohen's d", "p": "two-sided p of Welch's t",
            "pfdr": "Benjamini-Hochberg FDR-adjusted p over voxels"}  # fmt:skip
    for key in sorted(stat, key=len, reverse=True):
        if desc.endswith(key):
            return f"{stat[key]} of age-bin-corrected local brain-PAD, {desc[: -len(key)]}"
    return desc
