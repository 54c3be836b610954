"""Group statistics: the scan table in, typed results out, no file written.

Fits the age-bias correction on the reference set and runs the statistics of
:mod:`bids_brainage.stats` per model, per ROI and voxel-wise (seed 002), and the population
importance maps (seeds 000 and 003). What the dataset does not allow is listed, with the reason.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ..config import MIN_BIAS_CONTROLS, StatisticsSettings
from ..models.bundle import BundleError, packaged_bundles, resolve_bundle
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
from .collect import (
    dataset_shape_notes,
    exclusion_reasons,
    first_readable,
    read_predictions,
    read_roi_tables,
    scan_maps,
    space_of,
)

LOGGER = logging.getLogger("bids_brainage")
# participant-level importance maps: desc → (desc prefix of the population maps, measure)
IMPORTANCE_MAPS = {
    "occlusion": ("importance", "|occlusion change of predicted age| (years)"),
    "unoise": ("unoise", "U-noise importance (1 - tolerated noise)"),
}
# per-scan columns each model adds to the scans table (described in outputs.MODEL_COLUMNS)
MODEL_MEASURES = ("predicted_age", "interval_lower", "interval_upper", "brain_pad",
                  "brain_pad_corrected", "predicted_age_corrected", "calibration",
                  "normative_lower", "normative_upper")  # fmt:skip


class StatisticsError(ValueError):
    """The statistics cannot run; the message says why in one line."""


@dataclass
class GroupSettings:
    """What the statistics need of the run: the statistics settings, the control labels, a
    seed, the processes for the voxel-wise pass and where trained bundles are looked for.
    """

    statistics: StatisticsSettings
    control_labels: list[str]
    seed: int
    nprocs: int = 1
    output_dir: Path | None = None


@dataclass
class VoxelMaps:
    """Group maps on the template grid (voxel-wise statistics or population importance)."""

    maps: dict  # desc → volume
    affine: np.ndarray | None = None
    mask: np.ndarray | None = None
    space: str | None = None
    resolution: str | None = None
    n_maps: int = 0
    n_pairs: int | None = None
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bias_bins: list[str] = field(default_factory=list)
    bias_counts: list[int] = field(default_factory=list)
    counts: dict = field(default_factory=dict)  # importance: maps per age range


@dataclass
class GroupResults:
    """Everything the group level computed, before anything is written."""

    scans: pd.DataFrame
    models: dict[str, ModelAnalysis] = field(default_factory=dict)
    roi: pd.DataFrame | None = None  # group comparisons per ROI
    roi_summary: pd.DataFrame | None = None  # local PAD per ROI
    voxelwise: VoxelMaps | None = None
    importance: dict[str, VoxelMaps] = field(default_factory=dict)  # method → population maps
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # statistics not computed, and why
    gaps: list[str] = field(default_factory=list)  # scans missing from the participant level
    model_names: list[str] = field(default_factory=list)


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


def dataset_reference(once: pd.DataFrame, settings: GroupSettings) -> tuple[pd.Series, str]:
    """Boolean mask of the scans (one per participant) that form the reference, and its name."""
    stats, labels = settings.statistics, settings.control_labels
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


def choose_reference(model: str, once: pd.DataFrame, settings: GroupSettings):
    """(reference table or None, its name or why there is none, mask over ``once`` or None)."""
    how = settings.statistics.bias_reference
    if how not in ("auto", "controls", "bundle", "all"):
        path = Path(how)
        return read_external_reference(path), f"external table {path}", None
    if how in ("auto", "controls", "all"):
        mask, name = dataset_reference(once, settings)
        if how != "auto" or mask.sum() >= MIN_BIAS_CONTROLS:
            return once.loc[mask, ["age", "predicted_age"]], name, mask
    try:
        table = bundle_reference(model, settings.output_dir)
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


def roi_statistics(scans: pd.DataFrame, reference_mask: pd.Series | None, labels):
    """Per ROI: local PAD, linear age-bias correction on the reference, group comparisons.

    Returns (summary per ROI, comparisons, skipped) or None when no scan has an ROI table.
    """
    scans = first_scans(scans[scans["age"].notna()])
    long = read_roi_tables(scans)
    if long is None:
        return None
    long = long.join(scans[["age", "group"]], on="scan")
    long["local_pad"] = long["mean_local_brainage"] - long["age"]
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


def voxelwise_statistics(scans: pd.DataFrame, pairs: pd.DataFrame,
                         reference_mask: pd.Series | None, labels, nprocs: int = 1):  # fmt:skip
    """Welch t/d/p maps between groups, ICC map over rescans, age-bin bias maps (seed 002)."""
    paths = scan_maps(scans, "local")
    if not paths:
        return None
    readable = first_readable(paths.values())
    if readable is None:
        return VoxelMaps({}, failures=[f"{p}: cannot be read as NIfTI" for p in paths.values()],
                         skipped=[f"voxel-wise statistics: none of the {len(paths)} local maps "
                                  "could be read"], n_pairs=0)  # fmt:skip
    path, first, data = readable
    mask = np.isfinite(data) & (data != 0)  # local maps are zero outside the template brain
    reference = reference_scans(scans, reference_mask, labels)
    once = set(first_scans(scans.loc[list(paths)]).index)
    group_of = scans["group"].astype(object).where(scans["group"].notna(), "")
    records = [MapRecord(paths[i], str(group_of[i]), age_bin(scans.at[i, "age"]),
                         i in reference, float(scans.at[i, "age"]))
               for i in paths if i in once and pd.notna(scans.at[i, "age"])]  # fmt:skip
    map_pairs = [PairRecord(paths[p.first], paths[p.second]) for p in pairs.itertuples()
                 if p.first in paths and p.second in paths]  # fmt:skip
    sums = accumulate_maps(records, map_pairs, mask, first.affine, nprocs)
    space, resolution = space_of(path)
    result = VoxelMaps({}, affine=first.affine, mask=mask, space=space, resolution=resolution,
                       n_maps=len(records), n_pairs=sums.pairs, failures=sums.failures)  # fmt:skip
    if len(paths) < len(scans):
        result.skipped.append(f"voxel-wise statistics use the {len(paths)} of {len(scans)} "
                              "scans that have a local map")  # fmt:skip
    if not sums.reference_counts:
        result.skipped.append("voxel-wise age-bias and group maps: no reference participant "
                              "(controls with an age) has a local map")  # fmt:skip
    if sums.reference_counts:
        bins = sums.bias_maps()
        result.bias_bins = [age_bin_label(b) for b in bins]
        result.bias_counts = [sums.reference_counts[b] for b in bins]
        result.maps["agebias"] = np.stack([unmask(m, mask) for m in bins.values()], axis=-1)
        order = [g for g in group_order(pd.Series(sums.groups()), labels) if g][::-1]
        if len(order) < 2:
            result.skipped.append("voxel-wise group maps: fewer than two groups")
        for i, g1 in enumerate(order):
            for g2 in order[i + 1 :]:
                try:
                    welch = sums.welch_maps(g1, g2)
                except MapError as err:
                    result.failures.append(str(err))
                    continue
                stem = re.sub(r"[^A-Za-z0-9]", "", f"{g1}vs{g2}")
                for stat in ("t", "cohens_d", "p"):
                    result.maps[f"{stem}{stat.replace('_', '')}"] = unmask(welch[stat], mask)
                result.maps[f"{stem}pfdr"] = unmask(maps_fdr(welch["p"]), mask, fill=1.0)
    if sums.pairs >= 2:
        result.maps["icc"] = unmask(sums.icc_map(), mask)
    else:
        result.skipped.append(f"voxel-wise ICC: {sums.pairs} rescan pair(s) with local maps, "
                              "at least 2 needed")  # fmt:skip
    return result


def importance_statistics(scans: pd.DataFrame, method: str) -> VoxelMaps | None:
    """Population importance maps from the participants' occlusion or U-noise maps (seeds 003
    and 000).

    Mean |importance| over participants (one scan each); the top 10 % of voxels of the
    Gaussian-smoothed (sigma 1 voxel) mean; and the mean in the under-30 and over-60
    participants (seed 000's comparison of young and old brains).
    """
    from scipy import ndimage

    prefix, _ = IMPORTANCE_MAPS[method]
    once = first_scans(scans)
    paths = scan_maps(once, method)
    if not paths:
        return None
    readable = first_readable(paths.values())
    if readable is None:
        return VoxelMaps(
            {},
            counts={"all": 0, "under30": 0, "over60": 0},
            failures=[f"{p}: cannot be read as NIfTI" for p in paths.values()],
        )
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
    return VoxelMaps(maps, affine=first.affine, mask=mask, space=space, resolution=resolution,
                     n_maps=counts["all"], counts=counts, failures=failures)  # fmt:skip


# --- the whole analysis ------------------------------------------------------------------------
def analyse(table: pd.DataFrame, settings: GroupSettings) -> GroupResults:
    """Everything the group level computes, no file written; what it cannot, with the reason."""
    table = table.copy()
    table["excluded"] = exclusion_reasons(table, settings.statistics.include_failed_qc)
    predictions, problems = read_predictions(table)
    results = analyse_predictions(table, predictions, settings)
    results.problems = problems + results.problems
    return map_statistics(results, settings)


def analyse_predictions(table: pd.DataFrame, predictions: pd.DataFrame,
                        settings: GroupSettings) -> GroupResults:  # fmt:skip
    """The brain-age statistics of in-memory tables: ``table`` has one row per scan (its
    ``excluded`` column None for the scans analysed), ``predictions`` one row per scan
    (``scan``: the table's index) and model.
    """
    stats, labels = settings.statistics, settings.control_labels
    results = GroupResults(table)
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
        reference, name, mask = choose_reference(model, once, settings)
        analysis = analyse_model(model, scans, reference, name, stats.bias_form, labels,
                                 settings.seed,
                                 site_calibration=stats.site_calibration == "auto")  # fmt:skip
        analysis.reference_mask = mask if analysis.bias is not None else None
        results.models[model] = analysis
        results.skipped += [f"model {model}: {line}" for line in analysis.skipped]
        for column in MODEL_MEASURES:
            if column in analysis.scans:
                table.loc[analysis.scans.index, f"{model}_{column}"] = analysis.scans[column]
    results.scans = table
    return results


def map_statistics(results: GroupResults, settings: GroupSettings) -> GroupResults:
    """ROI, voxel-wise and importance-map statistics, read from each scan's derivatives."""
    labels = settings.control_labels
    table = results.scans
    included = table[table["excluded"].isna()]
    primary = next(iter(results.models.values()), None)
    reference_mask = primary.reference_mask if primary else None
    pairs = primary.pairs if primary else rescan_pairs(included)
    roi = roi_statistics(included, reference_mask, labels)
    if roi is None:
        results.skipped.append("ROI statistics: no scan has an ROI table (they come with a "
                               "local-unet --model at the participant level)")  # fmt:skip
    else:
        results.roi_summary, results.roi, skipped = roi
        results.skipped += skipped
    results.voxelwise = voxelwise_statistics(included, pairs, reference_mask, labels,
                                             settings.nprocs)  # fmt:skip
    if results.voxelwise is None:
        results.skipped.append("voxel-wise statistics: no scan has a local brain-age map")
    else:
        results.skipped += results.voxelwise.skipped
    for method in IMPORTANCE_MAPS:
        found = importance_statistics(included, method)
        if found is None:
            results.skipped.append(f"population {method} maps: no scan has {method} maps")
        else:
            results.importance[method] = found
    return results
