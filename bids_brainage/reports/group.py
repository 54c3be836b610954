"""``group.html``: the group-level findings, figures, tables and a methods paragraph."""

from __future__ import annotations

import html
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..stats.analysis import first_scans, group_order, is_control  # noqa: E402
from ..stats.compare import roc_curve_points  # noqa: E402
from ..utils.io import write_text_atomic  # noqa: E402
from .interactive import SORT_SCRIPT, age_scatter_svg, scans_table
from .model_card import _save, voxel_map_figure  # noqa: E402

STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:"
         "collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 7px;font-size:90%}"
         "img{max-width:100%}.note{color:#a40}"
         "p.methods{background:#f4f4f4;padding:10px}")  # fmt:skip


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def _scatter_figure(scans: pd.DataFrame, model: str, target: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.3))
    low, high = (
        scans[["age", "predicted_age"]].min().min(),
        scans[["age", "predicted_age"]].max().max(),
    )
    for ax, column in zip(axes, ("group", "site"), strict=True):
        for value, part in scans.groupby(scans[column].fillna("n/a").astype(str)):
            ax.scatter(part["age"], part["predicted_age"], s=14, alpha=0.75, label=value)
        ax.plot([low, high], [low, high], "k--", lw=1)
        ax.set(xlabel="chronological age (y)", ylabel="predicted age (y)",
               title=f"{model}: by {column}")  # fmt:skip
        ax.legend(fontsize=8)
    return _save(fig, target)


def _pad_figure(once: pd.DataFrame, order: list, model: str, target: Path) -> Path:
    panels = [("brain_pad", "uncorrected"), ("brain_pad_corrected", "bias-corrected")]
    panels = [(c, t) for c, t in panels if once[c].notna().any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), sharey=True,
                             squeeze=False)  # fmt:skip
    for ax, (column, title) in zip(axes[0], panels, strict=True):
        data = [once.loc[once["group"].astype(str) == g, column].dropna() for g in order]
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(order) + 1), order)
        for i, values in enumerate(data, 1):
            ax.scatter(np.full(len(values), i) + np.random.default_rng(i).uniform(-0.15, 0.15,
                       len(values)), values, s=10, alpha=0.6)  # fmt:skip
        ax.axhline(0, color="grey", lw=1)
        ax.set(title=f"{model}: brain-PAD, {title}", ylabel="brain-PAD (y)")
    return _save(fig, target)


def _roc_figure(once: pd.DataFrame, roc: pd.DataFrame, control_labels, target: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4.3))
    controls = once[is_control(once["group"], control_labels)]
    for row in roc.itertuples():
        patients = once[once["group"].astype(str) == row.group][row.measure]
        fpr, tpr = roc_curve_points(patients, controls[row.measure])
        ax.plot(fpr, tpr, label=f"{row.group} (AUC {row.auc:.2f})")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title=f"ROC: {'corrected ' if roc['measure'].iloc[0].endswith('corrected') else ''}"
                 "brain-PAD vs controls")  # fmt:skip
    ax.legend(fontsize=8)
    return _save(fig, target)


def _reliability_figure(scans: pd.DataFrame, pairs: pd.DataFrame, row, target: Path) -> Path:
    first = scans.loc[pairs["first"], "predicted_age"].to_numpy(float)
    second = scans.loc[pairs["second"], "predicted_age"].to_numpy(float)
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.2))
    for kind, colour in (("within-site", "C0"), ("between-site", "C1")):
        chosen = (pairs["kind"] == kind).to_numpy()
        axes[0].scatter(first[chosen], second[chosen], s=16, c=colour, label=kind)
        axes[1].scatter((first[chosen] + second[chosen]) / 2, second[chosen] - first[chosen],
                        s=16, c=colour, label=kind)  # fmt:skip
    low, high = min(first.min(), second.min()), max(first.max(), second.max())
    axes[0].plot([low, high], [low, high], "k--", lw=1)
    axes[0].set(xlabel="first scan: predicted age (y)", ylabel="second scan (y)",
                title=f"Rescans: ICC(2,1) = {row['icc']:.3f}")  # fmt:skip
    for value, style in ((row["mean_difference"], "-"), (row["loa_low"], "--"),
                         (row["loa_high"], "--")):  # fmt:skip
        axes[1].axhline(value, color="grey", ls=style)
    axes[1].set(xlabel="mean of the two scans (y)", ylabel="second - first (y)",
                title="Bland-Altman (mean, 95 % limits)")  # fmt:skip
    axes[0].legend(fontsize=8)
    return _save(fig, target)


def _table(frame: pd.DataFrame, columns: list[str]) -> str:
    if frame is None or frame.empty:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns if c in frame)

    def cell(value):
        if isinstance(value, float):
            return "n/a" if math.isnan(value) else f"{value:.4g}"
        return html.escape(str(value))

    body = "".join("<tr>" + "".join(f"<td>{cell(row[c])}</td>" for c in columns if c in frame)
                   + "</tr>" for _, row in frame.iterrows())  # fmt:skip
    return f"<table><tr>{head}</tr>{body}</table>"


def methods_paragraph(results) -> str:
    """A methods/results paragraph with the numbers, ready to paste."""
    parts = []
    for model, analysis in results.models.items():
        bias = analysis.bias_summary
        once = first_scans(analysis.scans[analysis.scans["age"].notna()])
        counts = once["group"].fillna("ungrouped").astype(str).value_counts().sort_index()
        form = ("chronological age (Eq. 6-7 of Popescu et al., 2021)" if bias["form"] == "age"
                else "predicted age (Eq. 8 of Popescu et al., 2021)")  # fmt:skip
        text = (
            f"Brain age was predicted with the model {model} for "
            f"{', '.join(f'{n} {g}' for g, n in counts.items()) or 'no'} participants with an "
            "age (one scan each). "
        )
        if analysis.bias is not None:
            text += (
                f"Age bias (regression dilution) was corrected by regressing brain-PAD on {form} "
                f"in {bias['reference']} (n = {bias['n_reference']}; slope {bias['alpha']:.3f}, "
                f"intercept {bias['beta']:.2f} years) and subtracting the fitted line from every "
                f"participant's brain-PAD; in the controls, the correlation of brain-PAD with age "
                f"went from r = {bias['pad_age_r_controls_before']:.2f} to "
                f"r = {bias['pad_age_r_controls_after']:.2f}. "
            )
        else:
            text += f"Brain-PAD was not corrected for age bias ({bias['reference']}). "
        if math.isfinite(bias["mae_controls"]):
            text += (f"Uncorrected accuracy on the {bias['n_controls']} controls: MAE "
                     f"{bias['mae_controls']:.2f} years, r = {bias['r_controls']:.2f}, "
                     f"R² = {bias['r2_controls']:.2f}. ")  # fmt:skip
        measure = "brain_pad_corrected" if analysis.bias is not None else "brain_pad"
        corrected = (analysis.comparisons[analysis.comparisons["measure"] == measure]
                     if not analysis.comparisons.empty else analysis.comparisons)  # fmt:skip
        if not corrected.empty:
            text += ("Groups were compared with Welch's t-test (Welch-Satterthwaite degrees of "
                     "freedom; Bonferroni and Benjamini-Hochberg corrections over the pairs) and "
                     "Cohen's d with the pooled standard deviation: ")  # fmt:skip
            text += (
                "; ".join(
                    f"{r.group1} vs {r.group2}: {r.difference:+.2f} years "
                    f"[95 % CI {r.difference_ci_low:.2f}, {r.difference_ci_high:.2f}], "
                    f"t({r.df:.1f}) = {r.t:.2f}, p = {r.p:.3g} (Bonferroni {r.p_bonferroni:.3g}), "
                    f"d = {r.cohens_d:.2f}"
                    for r in corrected.itertuples()
                )
                + ". "
            )
        if not analysis.roc.empty:
            text += (
                "The ROC-AUC of corrected brain-PAD against the controls was "
                + "; ".join(
                    f"{r.auc:.2f} [bootstrap 95 % CI {r.auc_ci_low:.2f}, {r.auc_ci_high:.2f}] for "
                    f"{r.group}"
                    for r in analysis.roc.itertuples()
                )
                + ". "
            )
        for r in analysis.reliability.itertuples():
            text += (f"Across {r.n_targets} {r.pairs} rescan pairs, ICC(2,1) of predicted age "
                     f"was {r.icc:.3f} [95 % CI {r.icc_ci_low:.3f}, {r.icc_ci_high:.3f}], "
                     f"Bland-Altman mean difference {r.mean_difference:+.2f} years, limits of "
                     f"agreement {r.loa_low:.2f} to {r.loa_high:.2f}. ")  # fmt:skip
        parts.append(text)
    return "\n".join(f'<p class="methods">{html.escape(p)}</p>' for p in parts)


def _list_section(title: str, lines: list[str], css: str = "") -> str:
    if not lines:
        return ""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return f'<h2>{title}</h2><ul class="{css}">{items}</ul>'


def write_group_report(results, control_labels, written: list[Path], root: Path) -> Path:
    """Write ``root/group.html`` and its figures under ``root/group/figures``; ``root`` is
    the staging tree that becomes OUTPUT_DIR's group outputs, so links are relative to it.
    """
    output_dir = Path(root)
    figures = output_dir / "group" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    labels = control_labels
    sections = []
    scans = results.scans
    excluded = scans[scans["excluded"].notna()]
    sections.append(
        f"<h2>Scans</h2><p>{len(scans)} scan(s) of {scans['participant_id'].nunique()} "
        f"participant(s); {len(excluded)} excluded. Click a column's name to sort; a scan's "
        "name opens its subject report.</p>" + scans_table(scans, list(results.models))
    )
    sections.append(_list_section("Participant level: failed or missing scans", results.gaps,
                                  "note"))  # fmt:skip
    sections.append(_list_section("Problems", results.problems, "note"))
    sections.append(_list_section("Skipped statistics", results.skipped))

    def img(path: Path, alt: str) -> str:
        return f'<img src="{path.relative_to(output_dir).as_posix()}" alt="{html.escape(alt)}">'

    for model, analysis in results.models.items():
        stem = _safe(model)
        with_age = analysis.scans[analysis.scans["age"].notna()]
        once = first_scans(with_age).assign(group=lambda t: t["group"].fillna("ungrouped"))
        order = group_order(once["group"], labels)
        parts = [f"<h2>Model {html.escape(model)}</h2>"]
        if with_age.empty:
            parts.append("<p>No scan has an age: predicted ages are in group_scans.tsv; "
                         "brain-PAD figures need ages.</p>")  # fmt:skip
        else:
            parts.append(age_scatter_svg(scans, model) + " (hover a point for its scan)")
            parts.append(img(_scatter_figure(with_age, model, figures / f"{stem}_scatter.png"),
                             "predicted vs chronological age"))  # fmt:skip
        parts += ["<h3>Age-bias correction</h3>",
                  _table(pd.DataFrame([analysis.bias_summary]),
                         ["form", "reference", "n_reference", "alpha", "beta",
                          "pad_age_r_controls_before", "pad_age_r_controls_after",
                          "n_controls", "mae_controls", "r_controls", "r2_controls"])]  # fmt:skip
        if not analysis.sites.empty:
            parts += ["<h3>Per-site calibration (each site's own controls)</h3>",
                      _table(analysis.sites, ["site", "mode", "n_controls", "age_span", "offset",
                                              "offset_se", "alpha", "beta", "interval_halfwidth",
                                              "note"])]  # fmt:skip
        if not with_age.empty:
            parts.append(img(_pad_figure(once, order, model, figures / f"{stem}_pad.png"),
                             "brain-PAD per group"))  # fmt:skip
        if not analysis.comparisons.empty:
            parts += ["<h3>Group comparisons</h3>", _table(analysis.comparisons, [
                "measure", "group1", "group2", "n1", "n2", "difference", "difference_ci_low",
                "difference_ci_high", "t", "df", "p", "p_bonferroni", "p_fdr",
                "cohens_d"])]  # fmt:skip
        if not analysis.roc.empty:
            parts += ["<h3>ROC</h3>", _table(analysis.roc, ["group", "n_patients", "n_controls",
                                                             "auc", "auc_ci_low", "auc_ci_high"]),
                      img(_roc_figure(once, analysis.roc, labels, figures / f"{stem}_roc.png"),
                          "ROC curves")]  # fmt:skip
        if not analysis.reliability.empty:
            overall = analysis.reliability.iloc[0]
            parts += ["<h3>Test-retest / between-site reliability</h3>",
                      _table(analysis.reliability, ["pairs", "n_targets", "icc", "icc_ci_low",
                             "icc_ci_high", "mean_difference", "loa_low", "loa_high"]),
                      img(_reliability_figure(analysis.scans, analysis.pairs, overall,
                                              figures / f"{stem}_reliability.png"),
                          "ICC scatter and Bland-Altman")]  # fmt:skip
        elif len(analysis.pairs) == 1:
            parts.append("<p>One rescan pair only: ICC needs at least two.</p>")
        sections.append("".join(parts))
    if results.roi_summary is not None:
        sections.append("<h2>Regions of interest (local brain-PAD)</h2>" + _table(
            results.roi_summary, ["roi", "n", "mean_local_brainage", "mean_local_pad",
                                  "sd_local_pad", "mae_local", "r_age"]))  # fmt:skip
    if results.roi is not None and not results.roi.empty:
        top = results.roi.reindex(results.roi["cohens_d"].abs().sort_values(ascending=False).index)
        sections.append("<h3>ROI group comparisons</h3>" + _table(
            top, ["roi", "measure", "group1", "group2", "n1", "n2", "difference", "t", "df", "p",
                  "p_bonferroni", "p_fdr", "cohens_d"]))  # fmt:skip
    if results.voxelwise is not None and results.voxelwise.maps:
        vox = results.voxelwise
        parts = [f"<h2>Voxel-wise ({vox.n_maps} local maps, {vox.n_pairs} rescan pairs)</h2>"]
        for desc, volume in vox.maps.items():
            if desc.endswith(("p", "pfdr")):
                continue
            shown = volume[..., 0] if volume.ndim == 4 else volume
            title = desc if volume.ndim == 3 else f"{desc} (age bin {vox.bias_bins[0]})"
            figure = voxel_map_figure(shown, vox.mask, title, figures / f"map_{desc}.png",
                                      symmetric=desc != "icc")  # fmt:skip
            parts.append(img(figure, desc))
        for failure in vox.failures:
            parts.append(f'<p class="note">{html.escape(failure)}</p>')
        sections.append("".join(parts))
    for method, imp in results.importance.items():
        if not imp.maps:
            sections.append(_list_section(f"Population importance ({method}): no readable map",
                                          imp.failures, "note"))  # fmt:skip
            continue
        parts = [
            f"<h2>Population importance ({imp.n_maps} {method} maps; "
            f"{imp.counts['under30']} under 30, {imp.counts['over60']} over 60)</h2>"
        ]
        for desc, volume in imp.maps.items():
            figure = voxel_map_figure(volume, imp.mask, desc, figures / f"map_{desc}.png")
            parts.append(img(figure, desc))
        for failure in imp.failures:
            parts.append(f'<p class="note">{html.escape(failure)}</p>')
        sections.append("".join(parts))
    sections.append("<h2>Methods</h2>" + methods_paragraph(results))
    sections.append(
        "<h2>Files</h2><ul>"
        + "".join(f"<li>{html.escape(p.relative_to(output_dir).as_posix())}</li>" for p in written)
        + "</ul>"
    )
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>bids_brainage group"
            f"</title><style>{STYLE}</style></head><body><h1>bids_brainage: group level</h1>"
            + "".join(sections) + SORT_SCRIPT + "</body></html>\n")  # fmt:skip
    return write_text_atomic(output_dir / "group.html", page)
