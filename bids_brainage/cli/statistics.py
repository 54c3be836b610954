"""Group statistics: participant derivatives in, group tables, maps and group.html out.

Reads each scan's ``_brainage.tsv`` (and, when the participant level wrote them, its local
brain-age map ``*_desc-local_brainage.nii.gz`` and ROI table ``*_desc-roi_brainage.tsv``),
fits the age-bias correction on the reference set, and runs the statistics of
:mod:`bids_brainage.stats`. Files are written through the derivatives writer only at the end.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ..config import MIN_BIAS_CONTROLS, Config
from ..interfaces.bids import DerivativesDataSink
from ..models.bundle import BundleError, packaged_bundles, resolve_bundle
from ..preprocessing.qc import UNTRUSTWORTHY_FLAGS
from ..stats.analysis import (
    ModelAnalysis,
    analyse_model,
    control_mask,
    first_scans,
    group_order,
    has_groups,
    rescan_pairs,
)
from ..stats.bias import BiasCorrection, BiasError, age_bin, age_bin_label, pad_age_correlation
from ..stats.compare import adjust_pvalues, compare_groups
from ..stats.voxelwise import MapError, MapRecord, PairRecord, accumulate_maps, maps_fdr, unmask

LOGGER = logging.getLogger("bids_brainage")
LOCAL_MAP_SUFFIX = "_desc-local_brainage.nii.gz"
# participant-level importance maps → the desc prefix of their group-level population maps
IMPORTANCE_MAPS = {
    "occlusion": ("_desc-occlusion_brainage.nii.gz", "importance",
                  "|occlusion change of predicted age| (years)"),
    "unoise": ("_desc-unoise_brainage.nii.gz", "unoise",
               "U-noise importance (1 - tolerated noise)"),
}  # fmt:skip
ROI_TABLE_SUFFIX = "_desc-roi_brainage.tsv"

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
    "difference_ci_low": "Lower end of the 95 % CI of the difference (Welch)",
    "difference_ci_high": "Upper end of the 95 % CI of the difference (Welch)",
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
    "mean_local_pad": "Mean local brain-PAD (ROI mean local brain age - age), uncorrected",
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


class StatisticsError(ValueError):
    """The statistics cannot run; the message says why in one line."""


@dataclass
class GroupResults:
    """Everything the group level computed, before anything is written."""

    scans: pd.DataFrame
    models: dict[str, ModelAnalysis] = field(default_factory=dict)
    roi: pd.DataFrame | None = None  # group comparisons per ROI
    roi_summary: pd.DataFrame | None = None  # local PAD per ROI
    voxelwise: dict | None = None
    importance: dict = field(default_factory=dict)  # method → population maps
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # statistics not computed, and why
    gaps: list[str] = field(default_factory=list)  # scans missing from the participant level
    model_names: list[str] = field(default_factory=list)


# --- collecting --------------------------------------------------------------------------------
def scan_prefix(qc_file: str) -> str:
    return str(qc_file)[: -len("_qc.json")]


def exclusion_reasons(table: pd.DataFrame, include_failed_qc: bool) -> pd.Series:
    def reason(row) -> str | None:
        flags = set(filter(None, str(row["qc_flags"] or "").split(",")))
        failed = sorted(flags & UNTRUSTWORTHY_FLAGS)
        if failed and not include_failed_qc:
            return "QC: " + ", ".join(failed)
        if not Path(scan_prefix(row["qc_file"]) + "_brainage.tsv").is_file():
            return "no brain-age prediction (run the participant level with a --model)"
        return None

    return table.apply(reason, axis=1) if len(table) else pd.Series(dtype=object)


def read_brainage_table(path: str) -> pd.DataFrame:
    """A scan's ``_brainage.tsv``; older tables without the interval columns are accepted."""
    found = pd.read_csv(path, sep="\t", na_values="n/a")
    missing = [c for c in ("model", "predicted_age") if c not in found.columns]
    if missing:
        raise KeyError(f"no {' or '.join(missing)} column")
    for column in ("interval_lower", "interval_upper"):
        if column not in found.columns:
            found[column] = math.nan
    found["predicted_age"] = pd.to_numeric(found["predicted_age"], errors="raise")
    return found[["model", "predicted_age", "interval_lower", "interval_upper"]]


def read_predictions(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Long table: scan index, model, predicted age and interval, from every _brainage.tsv."""
    frames, problems = [], []
    for index, row in table[table["excluded"].isna()].iterrows():
        path = scan_prefix(row["qc_file"]) + "_brainage.tsv"
        try:
            found = read_brainage_table(path)
        except (OSError, ValueError, KeyError) as err:
            problems.append(f"{path}: unreadable brain-age table ({err}); scan excluded")
            table.loc[index, "excluded"] = "unreadable brain-age table"
            continue
        frames.append(found.assign(scan=index))
    if not frames:
        return pd.DataFrame(columns=["scan", "model", "predicted_age"]), problems
    return pd.concat(frames, ignore_index=True), problems


def model_columns(model: str) -> dict:
    return {f"{model}_{name}": {"Description": text.format(model=model),
                                **({"Units": unit} if unit else {})}
            for name, (text, unit) in MODEL_COLUMNS.items()}  # fmt:skip


# --- the bias reference ------------------------------------------------------------------------
def bundle_reference(model: str, output_dir: Path) -> pd.DataFrame:
    """The bundle's own out-of-fold predictions (the split its interval was calibrated on)."""
    candidates = [output_dir / "models" / model]
    try:
        candidates.append(resolve_bundle(model))
    except BundleError:
        pass
    for folder in packaged_bundles().values():  # the packaged "default" keeps its trained name
        if json.loads((folder / "model.json").read_text()).get("name") == model:
            candidates.append(folder)
    for folder in candidates:
        oof = folder / "oof_predictions.tsv"
        if oof.is_file():
            card = json.loads((folder / "model.json").read_text())
            split = card.get("interval", {}).get("calibration", "random")
            table = pd.read_csv(oof, sep="\t", na_values="n/a")
            return table[table["split"] == split][["age", "predicted_age"]]
    raise StatisticsError(f"model {model}: no bundle with out-of-fold predictions found "
                          f"(looked in {', '.join(map(str, candidates))})")  # fmt:skip


def dataset_reference(once: pd.DataFrame, config: Config) -> tuple[pd.Series, str]:
    """Boolean mask of the scans (one per participant) that form the reference, and its name."""
    stats, labels = config.statistics, config.models.control_labels
    how = stats.bias_reference
    has_age = once["age"].notna() & once["predicted_age"].notna()
    if how == "all":
        LOGGER.warning("bias correction fitted on every participant, the test participants "
                       "themselves (--bias-reference all): corrected PADs are not independent "
                       "of the fit")  # fmt:skip
        return has_age, "all participants (the test participants themselves)"
    controls = has_age & control_mask(once["group"], labels)
    if has_groups(once["group"]):
        name = "controls (" + ", ".join(sorted(set(once.loc[controls, "group"].astype(str)))) + ")"
    else:
        name = "all participants (participants.tsv has no group: everyone counted as a control)"
    if stats.bias_reference_query:
        try:
            kept = once[controls].query(stats.bias_reference_query).index
        except Exception as err:  # pandas raises many kinds on a bad query
            raise StatisticsError(f"--bias-reference-query {stats.bias_reference_query!r}: "
                                  f"{err}") from None  # fmt:skip
        controls = once.index.isin(kept) & controls
        name += f" where {stats.bias_reference_query}"
    return pd.Series(controls, index=once.index), name


def read_external_reference(path: Path) -> pd.DataFrame:
    """A ``--bias-reference`` TSV with age and predicted_age columns."""
    try:
        table = pd.read_csv(path, sep="\t", na_values="n/a")[["age", "predicted_age"]]
        return table.apply(pd.to_numeric, errors="raise")
    except (OSError, ValueError, KeyError) as err:
        raise StatisticsError(f"{path}: not a TSV with numeric age and predicted_age columns "
                              f"({err})") from None  # fmt:skip


def choose_reference(model: str, once: pd.DataFrame, config: Config):
    """(reference table or None, its name or why there is none, mask over ``once`` or None)."""
    how = config.statistics.bias_reference
    output_dir = config.execution.output_dir
    if how not in ("auto", "controls", "bundle", "all"):
        path = Path(how)
        return read_external_reference(path), f"external table {path}", None
    if how in ("auto", "controls", "all"):
        mask, name = dataset_reference(once, config)
        if how != "auto" or mask.sum() >= MIN_BIAS_CONTROLS:
            return once.loc[mask, ["age", "predicted_age"]], name, mask
    try:
        table = bundle_reference(model, output_dir)
    except StatisticsError as err:
        if how == "bundle":
            return None, str(err), None
        return None, (f"{int(mask.sum())} control(s) with an age, fewer than the "
                      f"{MIN_BIAS_CONTROLS} that --bias-reference auto needs, and {err}; pass "
                      "--bias-reference controls to fit on them anyway, or a TSV of another "
                      "dataset's controls"), None  # fmt:skip
    return table, f"out-of-fold predictions of the bundle {model} (its training data)", None


# --- ROI and voxel-wise ------------------------------------------------------------------------
def reference_scans(scans: pd.DataFrame, reference_mask: pd.Series | None, labels) -> set:
    """The in-dataset bias reference (one scan per participant), else the controls with an age."""
    if reference_mask is not None and reference_mask.any():
        return set(reference_mask[reference_mask].index)
    return set(scans.index[control_mask(scans["group"], labels) & scans["age"].notna()])


def roi_statistics(scans: pd.DataFrame, reference_mask: pd.Series | None, config: Config):
    """Per ROI: local PAD, linear age-bias correction on the reference, group comparisons.

    Returns (summary per ROI, comparisons, skipped) or None when no scan has an ROI table.
    """
    rows = []
    scans = first_scans(scans[scans["age"].notna()])
    for index, row in scans.iterrows():
        path = Path(scan_prefix(row["qc_file"]) + ROI_TABLE_SUFFIX)
        if path.is_file():
            try:
                table = pd.read_csv(path, sep="\t", na_values="n/a")[
                    ["roi", "mean_local_brainage"]
                ]
            except (OSError, ValueError, KeyError):
                continue  # its scan's local map is reported unreadable by the voxel-wise pass
            rows.append(table.assign(scan=index))
    if not rows:
        return None
    long = pd.concat(rows, ignore_index=True).join(scans[["age", "group"]], on="scan")
    long["local_pad"] = long["mean_local_brainage"] - long["age"]
    labels = config.models.control_labels
    reference = reference_scans(scans, reference_mask, labels)
    results, summary = [], []
    order = group_order(scans["group"], labels)[::-1]
    for roi, per_roi in long.groupby("roi", sort=False):
        per_roi = per_roi.dropna(subset=["local_pad"])
        ref = per_roi[per_roi["scan"].isin(reference)]
        try:
            bias = BiasCorrection.fit(ref["age"], ref["mean_local_brainage"], "age", "reference")
            values = bias.corrected_pad(per_roi["age"], per_roi["mean_local_brainage"])
            measure = "local_pad_corrected"
        except BiasError:
            values, measure = per_roi["local_pad"].to_numpy(), "local_pad"
        summary.append({"roi": roi, "n": len(per_roi),
                        "mean_local_brainage": per_roi["mean_local_brainage"].mean(),
                        "mean_local_pad": per_roi["local_pad"].mean(),
                        "sd_local_pad": per_roi["local_pad"].std(ddof=1),
                        "mae_local": per_roi["local_pad"].abs().mean(),
                        "r_age": pad_age_correlation(per_roi["age"],
                                                     per_roi["mean_local_brainage"]),
                        "n_reference": len(ref), "measure": measure})  # fmt:skip
        if len(order) >= 2:
            table = compare_groups(pd.Series(values, index=per_roi.index),
                                   per_roi["group"].astype(str), order)  # fmt:skip
            results.append(table.assign(roi=roi, measure=measure))
    skipped = []
    comparisons = pd.concat(results, ignore_index=True) if results else pd.DataFrame()
    if not comparisons.empty:
        comparisons["p_bonferroni"], comparisons["p_fdr"] = adjust_pvalues(comparisons["p"])
    else:
        skipped.append("ROI group comparisons: fewer than two groups")
    if summary and summary[0]["measure"] == "local_pad":
        skipped.append("ROI bias correction: fewer than 3 reference participants with an ROI "
                       "table")  # fmt:skip
    return pd.DataFrame(summary), comparisons, skipped


def scan_maps(scans: pd.DataFrame, suffix: str) -> dict:
    """Each scan's template-space map ending in ``suffix`` (the first, if several), by row."""
    paths = {}
    for index, row in scans.iterrows():
        stem = Path(scan_prefix(row["qc_file"]))
        found = sorted(stem.parent.glob(stem.name + "_space-*" + suffix))
        if found:
            paths[index] = str(found[0])
    return paths


def first_readable(paths) -> tuple[str, nib.Nifti1Image, np.ndarray] | None:
    """The first map that loads: it gives the grid (the unreadable ones are reported later)."""
    for path in paths:
        try:
            image = nib.load(path)
            return path, image, np.asarray(image.dataobj, dtype=np.float32)
        except Exception:  # noqa: BLE001 - nibabel raises many kinds on corrupt files
            continue
    return None


def space_of(path: str) -> tuple[str, str | None]:
    """The space- and res- entities of a template-space file name."""
    match = re.search(r"_space-([A-Za-z0-9]+)(?:_res-([A-Za-z0-9]+))?", Path(path).name)
    return match.group(1), match.group(2)


def voxelwise_statistics(scans: pd.DataFrame, pairs: pd.DataFrame,
                         reference_mask: pd.Series | None, config: Config):  # fmt:skip
    """Welch t/d/p maps between groups, ICC map over rescans, age-bin bias maps (seed 002)."""
    paths = scan_maps(scans, LOCAL_MAP_SUFFIX)
    if not paths:
        return None
    readable = first_readable(paths.values())
    if readable is None:
        return {"maps": {}, "failures": [f"{p}: cannot be read as NIfTI" for p in paths.values()],
                "skipped": [f"voxel-wise statistics: none of the {len(paths)} local maps could "
                            "be read"], "n_maps": 0, "n_pairs": 0}  # fmt:skip
    path, first, data = readable
    mask = np.isfinite(data) & (data != 0)  # local maps are zero outside the template brain
    labels = config.models.control_labels
    reference = reference_scans(scans, reference_mask, labels)
    once = set(first_scans(scans.loc[list(paths)]).index)
    group_of = scans["group"].astype(object).where(scans["group"].notna(), "")
    records = [MapRecord(paths[i], str(group_of[i]), age_bin(scans.at[i, "age"]),
                         i in reference, float(scans.at[i, "age"]))
               for i in paths if i in once and pd.notna(scans.at[i, "age"])]  # fmt:skip
    map_pairs = [PairRecord(paths[p.first], paths[p.second]) for p in pairs.itertuples()
                 if p.first in paths and p.second in paths]  # fmt:skip
    sums = accumulate_maps(records, map_pairs, mask, first.affine, config.nipype.nprocs)
    space, resolution = space_of(path)
    result = {"mask": mask, "affine": first.affine, "maps": {}, "failures": sums.failures,
              "space": space, "resolution": resolution, "n_maps": len(records),
              "n_pairs": sums.pairs, "skipped": []}  # fmt:skip
    if len(paths) < len(scans):
        result["skipped"].append(f"voxel-wise statistics use the {len(paths)} of {len(scans)} "
                                 "scans that have a local map")  # fmt:skip
    if not sums.reference_counts:
        result["skipped"].append("voxel-wise age-bias and group maps: no reference participant "
                                 "(controls with an age) has a local map")  # fmt:skip
    if sums.reference_counts:
        bins = sums.bias_maps()
        result["bias_bins"] = [age_bin_label(b) for b in bins]
        result["bias_counts"] = [sums.reference_counts[b] for b in bins]
        result["maps"]["agebias"] = np.stack([unmask(m, mask) for m in bins.values()], axis=-1)
        order = [g for g in group_order(pd.Series(sums.groups()), labels) if g][::-1]
        if len(order) < 2:
            result["skipped"].append("voxel-wise group maps: fewer than two groups")
        for i, g1 in enumerate(order):
            for g2 in order[i + 1 :]:
                try:
                    welch = sums.welch_maps(g1, g2)
                except MapError as err:
                    result["failures"].append(str(err))
                    continue
                stem = re.sub(r"[^A-Za-z0-9]", "", f"{g1}vs{g2}")
                for stat in ("t", "cohens_d", "p"):
                    result["maps"][f"{stem}{stat.replace('_', '')}"] = unmask(welch[stat], mask)
                result["maps"][f"{stem}pfdr"] = unmask(maps_fdr(welch["p"]), mask, fill=1.0)
    if sums.pairs >= 2:
        result["maps"]["icc"] = unmask(sums.icc_map(), mask)
    else:
        result["skipped"].append(f"voxel-wise ICC: {sums.pairs} rescan pair(s) with local maps, "
                                 "at least 2 needed")  # fmt:skip
    return result


def importance_statistics(scans: pd.DataFrame, method: str):
    """Population importance maps from the participants' occlusion or U-noise maps (seeds 003
    and 000).

    Mean |importance| over participants (one scan each); the top 10 % of voxels of the
    Gaussian-smoothed (sigma 1 voxel) mean; and the mean in the under-30 and over-60
    participants (seed 000's comparison of young and old brains).
    """
    from scipy import ndimage

    suffix, prefix, _ = IMPORTANCE_MAPS[method]
    once = first_scans(scans)
    paths = scan_maps(once, suffix)
    if not paths:
        return None
    readable = first_readable(paths.values())
    if readable is None:
        return {"method": method, "maps": {}, "n_maps": 0, "n_pairs": None,
                "counts": {"all": 0, "under30": 0, "over60": 0},
                "failures": [f"{p}: cannot be read as NIfTI" for p in paths.values()]}  # fmt:skip
    first_path, first, _ = readable
    sums = {"all": np.zeros(first.shape[:3]), "under30": np.zeros(first.shape[:3]),
            "over60": np.zeros(first.shape[:3])}  # fmt:skip
    counts, failures = dict.fromkeys(sums, 0), []
    for index, path in paths.items():
        try:
            values = np.abs(np.asarray(nib.load(path).dataobj, dtype=np.float64))
            if values.shape != first.shape[:3]:
                raise ValueError(f"grid {values.shape} differs from {first.shape[:3]}")
        except Exception as err:  # noqa: BLE001 - one bad map is reported, the rest go on
            failures.append(f"{path}: cannot be used ({err})")
            continue
        age = once.at[index, "age"]
        for name, wanted in (("all", True), ("under30", pd.notna(age) and age < 30),
                             ("over60", pd.notna(age) and age > 60)):  # fmt:skip
            if wanted:
                sums[name] += values
                counts[name] += 1
    maps = {f"{prefix}{k}" if k != "all" else prefix: sums[k] / counts[k]
            for k in sums if counts[k]}  # fmt:skip
    mask = maps[prefix] > 0
    smoothed = ndimage.gaussian_filter(maps[prefix], 1.0)
    cut = np.percentile(smoothed[mask], 90) if mask.any() else np.inf
    maps[f"{prefix}top10"] = ((smoothed >= cut) & mask).astype(np.float32)
    space, resolution = space_of(first_path)
    return {"method": method, "maps": maps, "mask": mask, "affine": first.affine,
            "counts": counts,
            "failures": failures, "space": space, "resolution": resolution,
            "n_maps": counts["all"], "n_pairs": None}  # fmt:skip


# --- the whole analysis ------------------------------------------------------------------------
def analyse(config: Config, table: pd.DataFrame) -> GroupResults:
    """Everything the group level computes, no file written; what it cannot, with the reason."""
    table = table.copy()
    table["excluded"] = exclusion_reasons(table, config.statistics.include_failed_qc)
    predictions, problems = read_predictions(table)
    results = GroupResults(table, problems=problems)
    included = table[table["excluded"].isna()]
    results.skipped += dataset_shape_notes(table, included)
    models = list(dict.fromkeys(predictions["model"]))
    results.model_names = models
    if not models and not included.empty:
        results.skipped.append("brain-age statistics: no scan has a brain-age prediction (run the "
                               "participant level with a --model)")  # fmt:skip
    for model in models:
        found = predictions[predictions["model"] == model].set_index("scan")
        scans = included.join(found[["predicted_age", "interval_lower", "interval_upper"]],
                              how="inner")  # fmt:skip
        if len(scans) < len(included):
            results.skipped.append(f"model {model}: predictions for {len(scans)} of "
                                   f"{len(included)} included scans (the others were run with "
                                   "another --model); its statistics use those")  # fmt:skip
        once = first_scans(scans[scans["age"].notna()])
        reference, name, mask = choose_reference(model, once, config)
        analysis = analyse_model(
            model,
            scans,
            reference,
            name,
            config.statistics.bias_form,
            config.models.control_labels,
            config.seeds.derive("stats"),
            site_calibration=config.statistics.site_calibration == "auto",
        )
        analysis.reference_mask = mask if analysis.bias is not None else None
        results.models[model] = analysis
        results.skipped += [f"model {model}: {line}" for line in analysis.skipped]
        for column in MODEL_COLUMNS:
            if column in analysis.scans:
                table.loc[analysis.scans.index, f"{model}_{column}"] = analysis.scans[column]
    results.scans = table
    primary = next(iter(results.models.values()), None)
    reference_mask = primary.reference_mask if primary else None
    pairs = primary.pairs if primary else rescan_pairs(included)
    roi = roi_statistics(included, reference_mask, config)
    if roi is None:
        results.skipped.append("ROI statistics: no scan has an ROI table (they come with a "
                               "local-unet --model at the participant level)")  # fmt:skip
    else:
        results.roi_summary, results.roi, skipped = roi
        results.skipped += skipped
    results.voxelwise = voxelwise_statistics(included, pairs, reference_mask, config)
    if results.voxelwise is None:
        results.skipped.append("voxel-wise statistics: no scan has a local brain-age map")
    else:
        results.skipped += results.voxelwise["skipped"]
    for method in IMPORTANCE_MAPS:
        found = importance_statistics(included, method)
        if found is None:
            results.skipped.append(f"population {method} maps: no scan has {method} maps")
        else:
            results.importance[method] = found
    return results


def dataset_shape_notes(table: pd.DataFrame, included: pd.DataFrame) -> list[str]:
    """What the shape of the dataset rules out, said once, before the per-model lines."""
    notes = []
    if included.empty:
        reasons = table["excluded"].value_counts()
        hint = (
            "; --include-failed-qc keeps scans that failed QC"
            if any(str(why).startswith("QC:") for why in reasons.index)
            else ""
        )
        notes.append(
            f"all {len(table)} scan(s) excluded ("
            + "; ".join(f"{why}: {n}" for why, n in reasons.items())
            + f"): no statistics{hint}"
        )
    elif included["age"].isna().all():
        notes.append(
            "no included scan has an age (participants.tsv has no usable age column):"
            " brain-PAD, bias correction, accuracy and group comparisons skipped"
        )
    elif included["age"].isna().any():
        n = int(included["age"].isna().sum())
        notes.append(f"{n} included scan(s) have no age: they count for the test-retest ICC "
                     "only")  # fmt:skip
    return notes


# --- writing -----------------------------------------------------------------------------------
def write_staged(root: Path, staged: Path, suffix: str, meta: dict, **entities) -> Path:
    """Copy a staged group file (and its sidecar) under ``root`` (the group staging tree that
    replaces OUTPUT_DIR's group outputs at the end) with its BIDS name.
    """
    extension = ".nii.gz" if staged.name.endswith(".nii.gz") else staged.suffix
    sink = DerivativesDataSink(base_directory=str(root),
                               entities={k: v for k, v in entities.items() if v},
                               suffix=suffix, extension=extension, in_file=str(staged),
                               meta_dict=meta)  # fmt:skip
    return Path(sink.run().outputs.out_file)


def staging_dir(config: Config) -> Path:
    """Where group outputs are written before the derivatives writer copies them in."""
    staging = config.execution.work_dir / "group_staging"
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def write_stats_table(config: Config, root: Path, table: pd.DataFrame, desc: str,
                      columns: dict) -> Path:  # fmt:skip
    staging = staging_dir(config)
    table = table[[c for c in columns if c in table.columns]]
    staged = staging / f"{desc}_stats.tsv"
    table.to_csv(staged, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    meta = {c: {"Description": d} for c, d in columns.items() if c in table.columns}
    return write_staged(root, staged, "stats", meta, desc=desc)


def write_maps(config: Config, root: Path, voxelwise: dict,
               sources: str = "local brain-age maps of the "
               "participant level (*_desc-local_brainage)") -> list[Path]:  # fmt:skip
    staging = staging_dir(config)
    written = []
    for desc, volume in voxelwise["maps"].items():
        staged = staging / f"{desc}_statmap.nii.gz"
        nib.Nifti1Image(np.nan_to_num(volume).astype(np.float32),
                        voxelwise["affine"]).to_filename(staged)  # fmt:skip
        meta = {"Description": map_description(desc), "Sources": sources,
                "NumberOfMaps": voxelwise["n_maps"]}  # fmt:skip
        if voxelwise.get("n_pairs") is not None:
            meta["RescanPairs"] = voxelwise["n_pairs"]
        if desc == "agebias":
            meta.update(
                AgeBins=voxelwise["bias_bins"], ReferenceMapsPerBin=voxelwise["bias_counts"]
            )
        written.append(write_staged(root, staged, "statmap", meta, space=voxelwise["space"],
                             resolution=voxelwise["resolution"], desc=desc))  # fmt:skip
    return written


def map_description(desc: str) -> str:
    for _, prefix, measure in IMPORTANCE_MAPS.values():
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


def describe_results(results: GroupResults) -> list[str]:
    """Console lines with the main numbers."""
    lines = []
    for model, analysis in results.models.items():
        bias = analysis.bias_summary
        if analysis.bias is not None:
            lines.append(
                f"{model}: bias fitted on {bias['reference']} (n={bias['n_reference']}, "
                f"slope {bias['alpha']:.3f}); PAD-age r in controls "
                f"{bias['pad_age_r_controls_before']:.2f} -> "
                f"{bias['pad_age_r_controls_after']:.2f}"
            )
        else:
            lines.append(f"{model}: brain-PAD not bias-corrected")
        for row in analysis.sites.itertuples():
            detail = (f"offset {row.offset:+.2f} ± {row.offset_se:.2f} y, n={row.n_controls}"
                      if row.mode != "pooled" else f"{row.n_controls} controls, pooled line")
            lines.append(f"  site {row.site}: {row.mode} ({detail})")
        if math.isfinite(bias["mae_controls"]):
            lines.append(f"  accuracy on {bias['n_controls']} controls: MAE "
                         f"{bias['mae_controls']:.2f} y, r {bias['r_controls']:.2f}")  # fmt:skip
        measure = "brain_pad_corrected" if analysis.bias is not None else "brain_pad"
        label = "corrected PAD" if analysis.bias is not None else "uncorrected PAD"
        if not analysis.comparisons.empty:
            chosen = analysis.comparisons[analysis.comparisons["measure"] == measure]
            for row in chosen.itertuples():
                test = (f"Welch t({row.df:.1f}) = {row.t:.2f}, p = {row.p:.3g}, "
                        f"d = {row.cohens_d:.2f}" if math.isfinite(row.t)
                        else f"n = {row.n1} and {row.n2}: no t-test")  # fmt:skip
                lines.append(f"  {row.group1} vs {row.group2}: {label} difference "
                             f"{row.difference:+.2f} y, {test}")  # fmt:skip
        for row in analysis.roc.itertuples():
            lines.append(f"  ROC-AUC {row.group} vs controls {row.auc:.2f} "
                         f"[{row.auc_ci_low:.2f}, {row.auc_ci_high:.2f}]")  # fmt:skip
        for row in analysis.reliability.itertuples():
            lines.append(f"  ICC(2,1) {row.pairs} rescans (n={row.n_targets}) {row.icc:.3f}")
    return lines
