"""Per-participant HTML report, built from the derivatives in OUTPUT_DIR after the graph ran.

One section per scan: brain-mask and tissue contours over the preprocessed T1w and the flicker
of the registered scan against the template (nireports' SVG reportlets, as in sMRIPrep), the
intensity histogram before and after v1/v2 normalisation, and the QC numbers with their flags,
so a reviewer can accept or reject a scan from the report alone. Scans that failed are listed
with their one-line reason.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import nibabel as nb
import numpy as np

from ..preprocessing.intensity import V2_GM_PEAK, V2_WM_PEAK
from ..utils.derivatives import ScanDerivatives
from ..utils.io import atomic_path, write_text_atomic
from .reportlets import registration_reportlet, segmentation_reportlet

LOGGER = logging.getLogger("bids_brainage")

SERIOUS_FLAGS = {
    "registration_failed", "implausible_brain_volume", "implausible_tissue_fractions",
    "cropped_field_of_view", "modulation_inaccurate",
}  # fmt:skip


def _histogram_figure(raw, v1, v2, mask, peaks: dict, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    panels = [
        (raw[mask], "N4-corrected (scanner units)", [peaks.get("gm_peak"), peaks.get("wm_peak")]),
        (v1[mask], "v1: white stripe (WM peak = 1)", [None, 1.0]),
        (v2[mask], f"v2: GM = {V2_GM_PEAK}, WM = {V2_WM_PEAK}", [V2_GM_PEAK, V2_WM_PEAK]),
    ]
    for ax, (values, title, lines) in zip(axes, panels, strict=True):
        upper = np.percentile(values, 99.8)
        ax.hist(values, bins=200, range=(0, upper), color="0.3")
        for line, colour in zip(lines, ("tab:orange", "tab:blue"), strict=True):
            if line is not None:
                ax.axvline(line, color=colour, linestyle="--", linewidth=1)
        ax.set_title(title, fontsize=9)
        ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=70)
    plt.close(fig)


def _load(path: Path) -> np.ndarray:
    return np.asanyarray(nb.load(str(path)).dataobj, dtype=np.float32)


def scan_figures(scan: ScanDerivatives, qc: dict) -> dict[str, Path]:
    """Write the figures of one scan into its subject's figures folder; return their paths."""
    space = scan.template
    t1w = _load(scan.native("T1w", desc="preproc"))
    mask = _load(scan.native("mask", desc="brain")) > 0.5
    out = {"segmentation": segmentation_reportlet(
        scan.native("T1w", desc="preproc"), scan.native("mask", desc="brain"),
        scan.native("probseg", label="GM"), scan.native("probseg", label="WM"),
        scan.figure("brainmask", extension=".svg"))}  # fmt:skip
    template = _template_images(qc)
    if template is not None:
        out["registration"] = registration_reportlet(
            nb.load(str(scan.template_t1w("preproc"))), *template, space,
            scan.figure("registration", space=space, extension=".svg"))  # fmt:skip
    v2 = _load(scan.native("T1w", desc="normv2"))
    peaks = qc.get("measures", {})
    v1 = np.where(mask, t1w / max(peaks.get("wm_peak", 1.0), 1e-6), 0)
    target = scan.figure("histogram")
    _histogram_figure(t1w, v1, v2, mask, peaks, target)
    out["histogram"] = target
    maps = (("local", "local brain age (years)"),
            ("localpad", "local brain-PAD (years, uncorrected)"),
            ("occlusion", "occlusion importance (change of predicted age, years)"),
            ("unoise", "U-noise importance (1 - tolerated noise)"))  # fmt:skip
    for desc, title in maps:
        path = scan.brainage_map(desc)
        if path.exists():
            from .model_card import voxel_map_figure

            volume = _load(path)
            target = scan.figure(desc, "brainage", space)
            out[title] = voxel_map_figure(volume, volume != 0, title, target,
                                          symmetric=desc not in ("local", "unoise"))  # fmt:skip
    return out


def _picture(relative: Path, name: str) -> str:
    """SVG reportlets as objects, so that their flicker and hover work; other figures as img."""
    src = html.escape(relative.as_posix())
    if relative.suffix == ".svg":
        return f'<object type="image/svg+xml" data="{src}" class="reportlet">{name}</object>'
    return f'<img src="{src}" alt="{html.escape(name)}">'


def _template_images(qc: dict) -> tuple[nb.Nifti1Image, nb.Nifti1Image] | None:
    """The template's T1w and brain mask, if its files are still there."""
    from ..utils.templates import _local_templateflow, fallback_maps

    template = qc["template"]
    if template["source"].startswith("templateflow"):
        local = _local_templateflow(template["name"], template["resolution"])
        if local is None:
            return None
        return nb.load(str(local.t1w)), nb.load(str(local.brain_mask))
    maps = fallback_maps(float(template["resolution"]))
    return (nb.Nifti1Image(maps.head.astype(np.float32), maps.affine),
            nb.Nifti1Image((maps.brain > 0.5).astype(np.uint8), maps.affine))  # fmt:skip


def _qc_table(qc: dict) -> str:
    rows = []
    sections = ("conform", "n4", "brain_extraction", "registration", "segmentation", "measures",
                "template_maps")  # fmt:skip
    for section in sections:
        for key, value in qc.get(section, {}).items():
            if key == "flags":
                continue
            rows.append(f"<tr><td>{section}</td><td>{html.escape(key)}</td>"
                        f"<td>{html.escape(str(value))}</td></tr>")  # fmt:skip
    return (
        "<table><tr><th>step</th><th>measure</th><th>value</th></tr>" + "".join(rows) + "</table>"
    )


def _flags(flags: list[str]) -> str:
    if not flags:
        return '<p class="ok">No QC flags.</p>'
    items = "".join(
        f'<li class="{"bad" if f in SERIOUS_FLAGS else "warn"}">{html.escape(f)}</li>'
        for f in flags
    )
    verdict = (
        '<p class="bad">Serious flags: check the figures before using this scan.</p>'
        if set(flags) & SERIOUS_FLAGS
        else '<p class="warn">Usable; the flags describe the input.</p>'
    )
    return f"{verdict}<ul>{items}</ul>"


STYLE = """
body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em;color:#222}
h2{border-bottom:1px solid #ccc} img,object.reportlet{max-width:100%;width:100%}
table{border-collapse:collapse;font-size:90%}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:left} .bad{color:#b00;font-weight:bold}
.warn{color:#a60} .ok{color:#080}
"""


def _brainage_table(path: Path) -> str:
    """The scan's brain-age predictions, one row per model bundle."""
    if not path.exists():
        return "<p>No brain-age prediction (run with <code>--model none</code>?).</p>"
    import pandas as pd

    table = pd.read_csv(path, sep="\t", na_values="n/a")
    rows = "".join(
        f"<tr><td>{html.escape(str(r.model))} ({html.escape(str(r.model_kind))})</td>"
        f"<td><b>{r.predicted_age:.1f}</b></td>"
        f"<td>{r.interval_lower:.1f} – {r.interval_upper:.1f} ({r.interval_coverage:.0%})</td>"
        f"<td>{'n/a' if pd.isna(r.chronological_age) else f'{r.chronological_age:.1f}'}</td>"
        f"<td>{'n/a' if pd.isna(r.brain_pad) else f'{r.brain_pad:+.1f}'}</td>"
        f'<td class="note">{_flags(r)}</td></tr>'
        for r in table.itertuples()
    )
    return ("<h3>Brain age</h3><table><tr><th>model</th><th>predicted age (y)</th>"
            "<th>interval</th><th>chronological age</th><th>brain-PAD (uncorrected)</th>"
            f"<th>flags</th></tr>{rows}</table>")  # fmt:skip


def _flags(row) -> str:
    flags = getattr(row, "flags", None)
    return (
        "none"
        if not isinstance(flags, str) or not flags
        else html.escape(flags.replace(",", ", "))
    )


def write_subject_report(output_dir: Path, subject: str, failures: dict[str, str]) -> Path | None:
    """Build ``sub-<label>.html`` from the scan derivatives found for ``subject``.

    ``failures`` maps scan keys (``sub-01_ses-2``) of this participant to their reasons.
    """
    output_dir = Path(output_dir)
    qc_files = ScanDerivatives.find_qc(output_dir, subject)
    if not qc_files and not failures:
        return None
    sections = []
    for qc_file in qc_files:
        qc = json.loads(qc_file.read_text())
        scan = ScanDerivatives.from_qc(output_dir, qc)
        stem = scan.stem
        images = scan_figures(scan, qc)
        pictures = "".join(f"<h3>{name}</h3>{_picture(path.relative_to(output_dir), name)}"
                           for name, path in images.items())  # fmt:skip
        about, template = qc["scan"], qc["template"]
        sections.append(
            f'<h2 id="{html.escape(stem)}">{html.escape(stem)}</h2>'
            f"<p>Source: {html.escape(about['source'])}; site {html.escape(about['site'])}"
            f" ({html.escape(about['site_source'])}); template "
            f"{html.escape(template['name'])} ({html.escape(template['source'])}).</p>"
            f"{_brainage_table(scan.brainage)}"
            f"{_flags(qc.get('flags', []))}{pictures}<h3>QC numbers</h3>{_qc_table(qc)}"
        )
    for key, reason in sorted(failures.items()):
        sections.append(
            f'<h2>{html.escape(key)}</h2><p class="bad">Failed: {html.escape(reason)}</p>'
        )
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>sub-{subject}</title>"
        f"<style>{STYLE}</style></head><body><h1>bids_brainage: sub-{html.escape(subject)}</h1>"
        + "".join(sections)
        + "</body></html>\n"
    )
    return write_text_atomic(output_dir / f"sub-{subject}.html", page)


def write_subject_reports(output_dir: Path, subjects: set[str], failed: dict[str, str],
                          nprocs: int = 1) -> None:  # fmt:skip
    """One HTML report per participant, from what was committed, ``nprocs`` at a time;
    ``failed`` maps scan keys to their reasons. A report that cannot be written never costs the
    results themselves.
    """
    jobs = {subject: {k: why for k, why in failed.items() if k.split("_")[0] == f"sub-{subject}"}
            for subject in sorted(subjects)}  # fmt:skip
    if nprocs > 1 and len(jobs) > 1:  # the SVG reportlets take seconds per scan
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(nprocs, len(jobs))) as pool:
            problems = list(pool.map(_write_or_warn, [output_dir] * len(jobs), jobs.keys(),
                                     jobs.values()))  # fmt:skip
    else:
        problems = [_write_or_warn(output_dir, s, mine) for s, mine in jobs.items()]
    for problem in filter(None, problems):
        LOGGER.warning(problem)


def _write_or_warn(output_dir: Path, subject: str, failures: dict[str, str]) -> str | None:
    try:
        write_subject_report(output_dir, subject, failures)
    except Exception as err:  # noqa: BLE001 - the report is optional, the results are not
        return f"sub-{subject}: report not written ({type(err).__name__}: {err})"
    return None
