"""The group analysis of one model's global predictions, on plain tables.

Input: one row per included scan (participant_id, session_id, run, site, group, age,
predicted_age) and a reference set (age, predicted_age) for the bias correction. Output: the
corrected scan table, the bias summary, group comparisons, ROC-AUCs and rescan reliability.

Group comparisons, ROC and the bias fit use one scan per participant (the first session/run),
so that rescans do not count twice; rescans feed the reliability (ICC, Bland-Altman) only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..models.metrics import accuracy_metrics
from .bias import BiasCorrection, pad_age_correlation
from .compare import bland_altman, compare_groups, icc_2_1, roc_auc

MEASURES = {
    "brain_pad_corrected": "brain-PAD after the bias correction",
    "brain_pad": "brain-PAD without correction",
}


@dataclass
class ModelAnalysis:
    """One model's corrected predictions and statistics."""

    model: str
    scans: pd.DataFrame
    bias: BiasCorrection
    bias_summary: dict
    comparisons: pd.DataFrame
    roc: pd.DataFrame
    reliability: pd.DataFrame
    pairs: pd.DataFrame
    reference_mask: pd.Series | None = None  # over one-scan-per-participant rows, if in-dataset


def is_control(groups: pd.Series, control_labels) -> pd.Series:
    labels = {str(label).lower() for label in control_labels}
    return groups.fillna("").astype(str).str.lower().isin(labels)


def scan_order_key(scans: pd.DataFrame) -> pd.Series:
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
    reference: pd.DataFrame,
    reference_name: str,
    form: str,
    control_labels,
    seed: int = 0,
) -> ModelAnalysis:
    scans = scans.copy()
    bias = BiasCorrection.fit(reference["age"], reference["predicted_age"], form, reference_name)
    scans["brain_pad"] = scans["predicted_age"] - scans["age"]
    scans["brain_pad_corrected"] = bias.corrected_pad(scans["age"], scans["predicted_age"])
    scans["predicted_age_corrected"] = scans["age"] + scans["brain_pad_corrected"]
    once = first_scans(scans[scans["age"].notna()])
    # with no group column everyone is a healthy participant (as for training)
    has_groups = once["group"].notna().any()
    controls = once[is_control(once["group"], control_labels)] if has_groups else once
    corrected_reference = bias.corrected_pad(reference["age"], reference["predicted_age"])
    summary = {
        "model": model, **{k: v for k, v in bias.to_dict().items()},
        "pad_age_r_reference_before": pad_age_correlation(
            reference["age"], reference["predicted_age"] - reference["age"]),
        "pad_age_r_reference_after": pad_age_correlation(reference["age"], corrected_reference),
        "n_controls": int(len(controls)),
        "pad_age_r_controls_before": pad_age_correlation(controls["age"], controls["brain_pad"]),
        "pad_age_r_controls_after": pad_age_correlation(controls["age"],
                                                        controls["brain_pad_corrected"]),
    }  # fmt:skip
    if len(controls) >= 3:
        accuracy = accuracy_metrics(controls["age"].to_numpy(float),
                                    controls["predicted_age"].to_numpy(float))  # fmt:skip
        summary.update(mae_controls=accuracy["mae"], r_controls=accuracy["r"],
                       r2_controls=accuracy["r2"])  # fmt:skip
    else:
        summary.update(mae_controls=math.nan, r_controls=math.nan, r2_controls=math.nan)
    comparisons, roc = group_tests(once, control_labels, seed)
    pairs = rescan_pairs(scans)
    return ModelAnalysis(model, scans, bias, summary, comparisons.assign(model=model),
                         roc.assign(model=model), reliability(scans, pairs).assign(model=model),
                         pairs)  # fmt:skip


def group_order(groups: pd.Series, control_labels) -> list:
    """Controls first, then the other groups alphabetically."""
    present = sorted(groups.dropna().astype(str).unique())
    controls = [g for g in present if g.lower() in {str(c).lower() for c in control_labels}]
    return controls + [g for g in present if g not in controls]


def group_tests(once: pd.DataFrame, control_labels, seed: int = 0):
    """Welch/Cohen's d between every pair of groups (each measure), ROC of patients vs controls."""
    order = group_order(once["group"], control_labels)
    comparisons = []
    for measure in MEASURES:
        table = compare_groups(once[measure], once["group"].astype(str), order[::-1])
        comparisons.append(table.assign(measure=measure))
    comparisons = pd.concat(comparisons, ignore_index=True) if comparisons else pd.DataFrame()
    controls = once[is_control(once["group"], control_labels)]
    roc_rows = []
    for group in order:
        if group in set(controls["group"].astype(str)):
            continue
        patients = once[once["group"].astype(str) == group]
        roc_rows.append({"group": group, "measure": "brain_pad_corrected",
                         **roc_auc(patients["brain_pad_corrected"],
                                   controls["brain_pad_corrected"], seed=seed)})  # fmt:skip
    return comparisons, pd.DataFrame(roc_rows)


def reliability(scans: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """ICC(2,1) and Bland-Altman of predicted age over rescan pairs (all; within and between
    site when both occur).
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
    return pd.DataFrame(rows)
