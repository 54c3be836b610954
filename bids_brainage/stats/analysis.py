"""The group analysis of one model's global predictions, on plain tables.

Input: one row per included scan (participant_id, session_id, run, site, group, age,
predicted_age) and a reference set (age, predicted_age) for the bias correction. Output: the
corrected scan table, the bias summary, group comparisons, ROC-AUCs and rescan reliability.

Group comparisons, ROC and the bias fit use one scan per participant (the first session/run),
so that rescans do not count twice; rescans feed the reliability (ICC, Bland-Altman) only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from ..models.metrics import accuracy_metrics
from .bias import BiasCorrection, BiasError, pad_age_correlation
from .calibration import apply_site_calibrations, fit_site_calibrations
from .compare import bland_altman, compare_groups, icc_2_1, roc_auc

MIN_ACCURACY_CONTROLS = 3  # MAE, r and R² on fewer controls say nothing
MEASURES = {
    "brain_pad_corrected": "brain-PAD after the bias correction",
    "brain_pad": "brain-PAD without correction",
}


@dataclass
class ModelAnalysis:
    """One model's corrected predictions and statistics; ``skipped`` says what could not run."""

    model: str
    scans: pd.DataFrame
    bias: BiasCorrection | None
    bias_summary: dict
    comparisons: pd.DataFrame
    roc: pd.DataFrame
    reliability: pd.DataFrame
    pairs: pd.DataFrame
    reference_mask: pd.Series | None = None  # over one-scan-per-participant rows, if in-dataset
    skipped: list[str] = field(default_factory=list)
    sites: pd.DataFrame = field(default_factory=pd.DataFrame)  # per-site calibration


def is_control(groups: pd.Series, control_labels) -> pd.Series:
    labels = {str(label).lower() for label in control_labels}
    return groups.fillna("").astype(str).str.lower().isin(labels)


def has_groups(groups: pd.Series) -> bool:
    """Whether participants.tsv gave any participant a group."""
    return bool(groups.notna().any())


def control_mask(groups: pd.Series, control_labels) -> pd.Series:
    """The healthy controls; with no group column at all, everyone (as for training)."""
    if not has_groups(groups):
        return pd.Series(True, index=groups.index)
    return is_control(groups, control_labels)


def scan_order_key(scans: pd.DataFrame) -> pd.Series:
    if scans.empty:
        return pd.Series(index=scans.index, dtype=str)
    parts = scans[["session_id", "run", "acquisition"]].astype(object).fillna("")
    return parts.astype(str).agg("|".join, axis=1)


def first_scans(scans: pd.DataFrame) -> pd.DataFrame:
    """One scan per participant: the first by session, then run, then acquisition."""
    order = scans.assign(_key=scan_order_key(scans))
    return order.sort_values(["participant_id", "_key"]).groupby("participant_id").head(1) \
        .drop(columns="_key")  # fmt:skip


def rescan_pairs(scans: pd.DataFrame) -> pd.DataFrame:
    """Participants with two or more scans: their first two, and whether the site changed."""
    rows = []
    for participant, rows_of in scans.groupby("participant_id", sort=True):
        if len(rows_of) < 2:
            continue
        ordered = rows_of.assign(_key=scan_order_key(rows_of)).sort_values("_key")
        first, second = ordered.iloc[0], ordered.iloc[1]
        rows.append({
            "participant_id": participant,
            "first": first.name, "second": second.name,
            "kind": "within-site" if first["site"] == second["site"] else "between-site",
        })  # fmt:skip
    return pd.DataFrame(rows, columns=["participant_id", "first", "second", "kind"])


def analyse_model(
    model: str,
    scans: pd.DataFrame,
    reference: pd.DataFrame | None,
    reference_name: str,
    form: str,
    control_labels,
    seed: int = 0,
    site_calibration: bool = True,
) -> ModelAnalysis:
    """Everything that the scans allow; what they do not is listed in ``skipped``.

    ``reference`` is None when no bias reference exists; ``reference_name`` then says why.
    """
    scans = scans.copy()
    skipped = []
    bias = None
    if reference is not None:
        try:
            bias = BiasCorrection.fit(reference["age"], reference["predicted_age"], form,
                                      reference_name)  # fmt:skip
        except BiasError as err:
            skipped.append(f"age-bias correction: {err}")
    else:
        skipped.append(f"age-bias correction: {reference_name}")
    scans["brain_pad"] = scans["predicted_age"] - scans["age"]
    scans["brain_pad_corrected"] = (
        bias.corrected_pad(scans["age"], scans["predicted_age"]) if bias else math.nan
    )
    once = first_scans(scans[scans["age"].notna()])
    controls = once[control_mask(once["group"], control_labels)]
    sites = {}
    if bias is not None and site_calibration and bias.form == "age":
        sites = fit_site_calibrations(controls, sorted(scans["site"].astype(str).unique()),
                                      bias.alpha, bias.beta)  # fmt:skip
        pad, mode, width = apply_site_calibrations(scans, sites)
        scans["brain_pad_corrected"] = pad
        scans["calibration"] = mode
        expected = scans["predicted_age"] - pad  # a healthy prediction at this age and site
        scans["normative_lower"], scans["normative_upper"] = expected - width, expected + width
        skipped += [f"site calibration at {c.site}: {c.note}" for c in sites.values()
                    if c.mode == "pooled"]  # fmt:skip
    elif bias is not None and site_calibration:
        skipped.append("site calibration: needs --bias-form age")
    scans["predicted_age_corrected"] = scans["age"] + scans["brain_pad_corrected"]
    once, controls = scans.loc[once.index], scans.loc[controls.index]  # with the new columns
    summary = {"model": model, "form": form, "alpha": math.nan, "beta": math.nan,
               "n_reference": 0, "reference": reference_name,
               "pad_age_r_reference_before": math.nan, "pad_age_r_reference_after": math.nan,
               "n_controls": int(len(controls)),
               "pad_age_r_controls_before": pad_age_correlation(controls["age"],
                                                                controls["brain_pad"]),
               "pad_age_r_controls_after": math.nan}  # fmt:skip
    if bias is not None:
        corrected_reference = bias.corrected_pad(reference["age"], reference["predicted_age"])
        summary.update(
            bias.to_dict(),
            pad_age_r_reference_before=pad_age_correlation(
                reference["age"], reference["predicted_age"] - reference["age"]),
            pad_age_r_reference_after=pad_age_correlation(reference["age"], corrected_reference),
            pad_age_r_controls_after=pad_age_correlation(controls["age"],
                                                         controls["brain_pad_corrected"]),
        )  # fmt:skip
    if len(controls) >= MIN_ACCURACY_CONTROLS:
        accuracy = accuracy_metrics(controls["age"].to_numpy(float),
                                    controls["predicted_age"].to_numpy(float))  # fmt:skip
        summary.update(mae_controls=accuracy["mae"], r_controls=accuracy["r"],
                       r2_controls=accuracy["r2"])  # fmt:skip
    else:
        summary.update(mae_controls=math.nan, r_controls=math.nan, r2_controls=math.nan)
        skipped.append(f"accuracy on the controls: {len(controls)} control(s) with an age, "
                       f"at least {MIN_ACCURACY_CONTROLS} needed")  # fmt:skip
    measures = [m for m in MEASURES if m != "brain_pad_corrected" or bias is not None]
    comparisons, roc, why_not = group_tests(once, control_labels, seed, measures)
    skipped += why_not
    pairs = rescan_pairs(scans)
    table, why_not = reliability(scans, pairs)
    skipped += why_not
    return ModelAnalysis(model, scans, bias, summary, comparisons.assign(model=model),
                         roc.assign(model=model), table.assign(model=model), pairs,
                         skipped=skipped, sites=site_table(sites, model))  # fmt:skip


def site_table(calibrations: dict, model: str) -> pd.DataFrame:
    rows = [{"model": model, **asdict(c)} for c in calibrations.values()]
    return pd.DataFrame(rows)


def group_order(groups: pd.Series, control_labels) -> list:
    """Controls first, then the other groups alphabetically."""
    present = sorted(groups.dropna().astype(str).unique())
    controls = [g for g in present if g.lower() in {str(c).lower() for c in control_labels}]
    return controls + [g for g in present if g not in controls]


def group_tests(once: pd.DataFrame, control_labels, seed: int = 0, measures=tuple(MEASURES)):
    """Welch/Cohen's d between every pair of groups (each measure), ROC of patients vs controls.

    Returns the two tables and the list of what was skipped, with the reason.
    """
    skipped = []
    if once.empty:
        return pd.DataFrame(), pd.DataFrame(), ["group comparisons and ROC: no participant "
                                                "with an age"]  # fmt:skip
    order = group_order(once["group"], control_labels)
    controls = once[is_control(once["group"], control_labels)]
    patient_groups = [g for g in order if g not in set(controls["group"].astype(str))]
    if not has_groups(once["group"]):
        skipped.append("group comparisons and ROC: participants.tsv has no group column "
                       "(everyone counted as a control)")  # fmt:skip
    elif len(order) < 2:
        what = "no patients" if not patient_groups else "no controls"
        skipped.append(f"group comparisons: one group only ({order[0]}; {what})")
    small = [g for g in order if (once["group"].astype(str) == g).sum() < 2]
    if small and len(order) >= 2:
        skipped.append(f"Welch t and p for {', '.join(small)}: fewer than 2 participants "
                       "(the rows stay, with n/a)")  # fmt:skip
    comparisons = []
    if len(order) >= 2:
        for measure in measures:
            table = compare_groups(once[measure], once["group"].astype(str), order[::-1])
            comparisons.append(table.assign(measure=measure))
    comparisons = pd.concat(comparisons, ignore_index=True) if comparisons else pd.DataFrame()
    roc_rows = []
    if has_groups(once["group"]) and patient_groups and controls.empty:
        skipped.append("ROC-AUC: no controls")
    elif has_groups(once["group"]) and not patient_groups:
        skipped.append("ROC-AUC: no patients")
    measure = "brain_pad_corrected" if "brain_pad_corrected" in measures else "brain_pad"
    for group in patient_groups if len(controls) else []:
        patients = once[once["group"].astype(str) == group]
        if min(len(patients), len(controls)) < 2:
            skipped.append(f"ROC-AUC {group} vs controls: bootstrap CI with {len(patients)} "
                           f"patient(s) and {len(controls)} control(s) only reflects the larger "
                           "class")  # fmt:skip
        roc_rows.append({"group": group, "measure": measure,
                         **roc_auc(patients[measure], controls[measure], seed=seed)})  # fmt:skip
    return comparisons, pd.DataFrame(roc_rows), skipped


def reliability(scans: pd.DataFrame, pairs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """ICC(2,1) and Bland-Altman of predicted age over rescan pairs (all; within and between
    site when both occur), and what was skipped.
    """
    rows = []
    both_kinds = pairs["kind"].nunique() > 1
    for kind in ("all", "within-site", "between-site"):
        chosen = pairs if kind == "all" else pairs[pairs["kind"] == kind]
        if len(chosen) < 2 or (kind != "all" and not both_kinds):
            continue
        first = scans.loc[chosen["first"], "predicted_age"].to_numpy(float)
        second = scans.loc[chosen["second"], "predicted_age"].to_numpy(float)
        rows.append({"pairs": kind, **icc_2_1(np.c_[first, second]),
                     **bland_altman(first, second)})  # fmt:skip
    skipped = []
    if len(pairs) < 2:
        skipped.append(f"test-retest ICC: {len(pairs)} participant(s) with a rescan, at least 2 "
                       "needed")  # fmt:skip
    return pd.DataFrame(rows), skipped
