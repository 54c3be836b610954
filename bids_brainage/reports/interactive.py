"""Self-contained interactive pieces of the group report: a table of every scan that sorts on a
click of its header, and a scatter of predicted against chronological age whose points name
their scan on hover (SVG ``<title>``, shown by every browser without a script or network).
"""

from __future__ import annotations

import html
import math

import pandas as pd

# Sorts the table body on a header click; numbers as numbers, "n/a" last.
SORT_SCRIPT = """<script>
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.style.cursor = "pointer";
    th.title = "click to sort";
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var up = th.dataset.order !== "up";
      th.dataset.order = up ? "up" : "down";
      function key(row) {
        var text = row.cells[col].textContent.trim(), value = parseFloat(text);
        return isNaN(value) ? text : value;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === "n/a") return 1;
        if (y === "n/a") return -1;
        var order = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0)
                                            : (typeof x === "number" ? -1 : 1);
        return up ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
</script>"""
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}"
    return html.escape(str(value))


def scan_stem(row) -> str:
    """The scan's name as the subject report heads its section (``sub-01_ses-1``)."""
    parts = [row["participant_id"]]
    for entity, column in (("acq", "acquisition"), ("run", "run")):
        if _given(row.get(column)):
            value = str(row[column])
            parts.append(value if value.startswith(f"{entity}-") else f"{entity}-{value}")
    if _given(row.get("session_id")):
        parts.insert(1, str(row["session_id"]))
    return "_".join(parts)


def _given(value) -> bool:
    return (
        value is not None
        and not (isinstance(value, float) and math.isnan(value))
        and str(value) not in ("", "n/a")
    )


def scans_table(scans: pd.DataFrame, models: list[str]) -> str:
    """Every scan, sortable, linked to its subject report, with each model's brain age."""
    columns = ["scan", "site", "group", "age"]
    for model in models:
        columns += [f"{model}_predicted_age", f"{model}_brain_pad_corrected"]
    columns += ["qc_flags", "excluded"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = []
    for _, row in scans.iterrows():
        stem = scan_stem(row)
        link = f'<a href="{html.escape(row["participant_id"])}.html#{html.escape(stem)}">'
        cells = [f"<td>{link}{html.escape(stem)}</a></td>"]
        cells += [f"<td>{_cell(row.get(c))}</td>" for c in columns[1:]]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")  # fmt:skip


def age_scatter_svg(scans: pd.DataFrame, model: str, width: int = 460, height: int = 400) -> str:
    """Predicted against chronological age, one point per scan with an age, coloured by group;
    hovering a point shows its scan, group, ages and brain-PAD.
    """
    predicted = f"{model}_predicted_age"
    points = scans[scans["age"].notna() & scans[predicted].notna()]
    if points.empty:
        return ""
    values = pd.concat([points["age"], points[predicted]])
    low, high = math.floor(values.min() / 10) * 10, math.ceil(values.max() / 10) * 10
    high = max(high, low + 10)
    margin = 45
    middle = (height - margin) / 2

    def x(age):
        return margin + (age - low) / (high - low) * (width - margin - 10)

    def y(age):
        return height - margin - (age - low) / (high - low) * (height - margin - 10)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{html.escape(model)}: predicted vs chronological age">',
             f'<line x1="{x(low)}" y1="{y(low)}" x2="{x(high)}" y2="{y(high)}" '
             'stroke="#999" stroke-dasharray="4"/>']  # fmt:skip
    for tick in range(int(low), int(high) + 1, 10):
        parts += [f'<text x="{x(tick)}" y="{height - margin + 15}" font-size="11" '
                  f'text-anchor="middle">{tick}</text>',
                  f'<text x="{margin - 6}" y="{y(tick) + 4}" font-size="11" '
                  f'text-anchor="end">{tick}</text>']  # fmt:skip
    parts += [f'<line x1="{margin}" y1="{height - margin}" x2="{width - 10}" '
              f'y2="{height - margin}" stroke="#333"/>',
              f'<line x1="{margin}" y1="10" x2="{margin}" y2="{height - margin}" stroke="#333"/>',
              f'<text x="{(width + margin) / 2}" y="{height - 8}" font-size="12" '
              'text-anchor="middle">chronological age (y)</text>',
              f'<text x="12" y="{middle}" font-size="12" text-anchor="middle" '
              f'transform="rotate(-90 12 {middle})">predicted age (y)</text>']  # fmt:skip
    groups = sorted(points["group"].fillna("n/a").astype(str).unique())
    colour = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}
    for _, row in points.iterrows():
        group = "n/a" if not _given(row.get("group")) else str(row["group"])
        pad = row[predicted] - row["age"]
        label = (f"{scan_stem(row)} ({group}): age {row['age']:.1f}, predicted "
                 f"{row[predicted]:.1f}, brain-PAD {pad:+.1f} y")  # fmt:skip
        parts.append(f'<circle cx="{x(row["age"]):.1f}" cy="{y(row[predicted]):.1f}" r="5" '
                     f'fill="{colour[group]}" fill-opacity="0.8"><title>{html.escape(label)}'
                     "</title></circle>")  # fmt:skip
    for i, group in enumerate(groups):
        parts.append(f'<circle cx="{margin + 15}" cy="{20 + 16 * i}" r="5" '
                     f'fill="{colour[group]}"/><text x="{margin + 25}" y="{24 + 16 * i}" '
                     f'font-size="11">{html.escape(group)}</text>')  # fmt:skip
    return "".join(parts) + "</svg>"
