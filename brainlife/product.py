"""brainlife.io's product.json for one subject: the default model's brain age at the top
level, QC flags as warnings, and a plotly figure of the brain age and its 90 % interval.

    python product.py OUTPUT_DIR sub-01 product.json
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path


def number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def product(output_dir: Path, subject: str) -> dict:
    table = output_dir / subject / "anat" / f"{subject}_brainage.tsv"
    qc_file = output_dir / subject / "anat" / f"{subject}_qc.json"
    if not table.exists():
        crash = sorted((output_dir / "logs").glob("crash-*.txt"))
        reason = crash[-1].read_text().strip().splitlines()[-1] if crash else "no output"
        return {"brainlife": [{"type": "error", "msg": f"bids_brainage failed: {reason}"}]}
    with table.open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    first = rows[0]  # the first model is the one --model named first (the default bundle)
    qc = json.loads(qc_file.read_text()) if qc_file.exists() else {}
    flags = sorted(
        {f for row in rows for f in (row.get("flags") or "").split(",") if f}
        | set(qc.get("flags", []))
    )
    age = number(first.get("chronological_age"))
    messages = [{"type": "warning", "msg": f"QC flag: {flag}"} for flag in flags]
    messages.append(
        {
            "type": "info",
            "msg": (
                f"{first['model']}: brain age {float(first['predicted_age']):.1f} y "
                f"(90 % interval {float(first['interval_lower']):.1f}–"
                f"{float(first['interval_upper']):.1f})"
                + (f", chronological age {age:.1f} y" if age is not None else "")
            ),
        }
    )
    figure = {
        "type": "plotly",
        "name": "Brain age",
        "data": [
            {
                "type": "scatter",
                "mode": "markers",
                "name": row["model"],
                "x": [row["model"]],
                "y": [number(row["predicted_age"])],
                "error_y": {
                    "type": "data",
                    "symmetric": False,
                    "array": [number(row["interval_upper"]) - number(row["predicted_age"])],
                    "arrayminus": [number(row["predicted_age"]) - number(row["interval_lower"])],
                },
            }
            for row in rows
        ]
        + (
            [
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": "chronological age",
                    "x": [rows[0]["model"], rows[-1]["model"]],
                    "y": [age, age],
                }
            ]
            if age is not None
            else []
        ),
        "layout": {"yaxis": {"title": "age (years)"}, "showlegend": True},
    }
    return {
        "predicted_age": number(first["predicted_age"]),
        "interval_lower": number(first["interval_lower"]),
        "interval_upper": number(first["interval_upper"]),
        "brain_pad": number(first.get("brain_pad")),
        "qc_flags": flags,
        "model": first["model"],
        "brainlife": [*messages, figure],
    }


if __name__ == "__main__":
    out, subject, target = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    target.write_text(json.dumps(product(out, subject), indent=2))
