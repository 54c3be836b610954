"""The group level's findings as short lines of text, for the console (pure, no I/O)."""

from __future__ import annotations

import math

from .statistics import GroupResults


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
            detail = (
                f"offset {row.offset:+.2f} ± {row.offset_se:.2f} y, n={row.n_controls}"
                if row.mode != "pooled"
                else f"{row.n_controls} controls, pooled line"
            )
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


def describe_bundle(card: dict) -> list[str]:
    """Lines with a trained bundle's validation figures, from its ``model.json``."""
    lines = []
    if "validation" in card:  # an importance model: no age of its own
        check = card["validation"]
        lines.append(f"{card['name']} ({card['kind']}) explains "
                     f"{card['explains']['name']}: held-out MAE {check['clean_mae']:.2f} clean, "
                     f"{check['noisy_mae']:.2f} with the learnt noise (mean mask "
                     f"{check['mean_mask_in_brain']:.2f})")  # fmt:skip
    for split, result in card.get("cross_validation", {}).items():
        mae = result["metrics"]["mae"]
        lines.append(
            f"{card['name']} ({card['kind']}) {split}-split CV MAE "
            f"{mae['mean']:.2f} ± {mae['sd']:.2f} years "
            f"(median-age baseline {result['metrics']['baseline_mae']['mean']:.2f})"
        )
    return lines
