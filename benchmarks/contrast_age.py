"""What ``--contrast-standardisation power`` does to real heads, and how much of the contrast it
takes out is age.

    python benchmarks/contrast_age.py WITH WITHOUT [--bids-dir BIDS_DIR]

WITH and WITHOUT: participant-level outputs of the same scans with ``--contrast-standardisation
power`` and without it (same other options). For each scan the QC gives the GM/WM ratio the
step measured and the power it applied; the volume tables give GM, WM and CSF with and without
it. Prints Markdown: the spread of ratio and power, their Spearman correlation with age, the
volume changes and theirs, and how strongly the GM fraction follows age either way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bids_brainage.preprocessing.anatomical import CONTRAST_POWER_LIMITS  # noqa: E402
from bids_brainage.utils.bids import read_participants  # noqa: E402
from bids_brainage.utils.derivatives import ScanDerivatives  # noqa: E402

IXI = ROOT.parent / "shared" / "data" / "ixi-hh-2mm"


def scan_table(with_step: Path, without_step: Path, ages: dict[str, float]) -> pd.DataFrame:
    rows = []
    for qc_file in ScanDerivatives.find_qc(with_step):
        qc = json.loads(qc_file.read_text())
        subject = qc["scan"]["subject"]
        volumes_file = qc_file.name.replace("_qc.json", "_desc-volumes_features.tsv")
        other = without_step / qc_file.relative_to(with_step).parent / volumes_file
        if not other.exists() or subject not in ages:
            continue
        power = pd.read_csv(qc_file.parent / volumes_file, sep="\t").iloc[0]
        plain = pd.read_csv(other, sep="\t").iloc[0]
        row = {
            "participant": f"sub-{subject}",
            "age": ages[subject],
            "ratio": qc["n4"]["gm_wm_ratio_before"],
            "power": qc["n4"]["contrast_power"],
            "gm_fraction_with": power["gm_fraction"],
            "gm_fraction_without": plain["gm_fraction"],
        }
        for tissue in ("gm", "wm", "csf"):
            row[f"delta_{tissue}_pct"] = 100 * (power[f"{tissue}_ml"] / plain[f"{tissue}_ml"] - 1)
        rows.append(row)
    return pd.DataFrame(rows)


def report(table: pd.DataFrame) -> str:
    def spearman(column):
        rho, p = stats.spearmanr(table[column], table["age"])
        return f"{rho:+.2f} (p {p:.1g})"

    lines = [
        f"{len(table)} scans with an age, both runs present.",
        "",
        "| measure | median | 5th–95th percentile | min / max | Spearman ρ with age |",
        "|---|---|---|---|---|",
    ]
    for column, label in [
        ("ratio", "GM/WM ratio before the step"),
        ("power", "power applied"),
        ("delta_gm_pct", "Δ GM volume %"),
        ("delta_wm_pct", "Δ WM volume %"),
        ("delta_csf_pct", "Δ CSF volume %"),
    ]:
        values = table[column]
        lines.append(
            f"| {label} | {values.median():.3f} | {values.quantile(0.05):.3f}–"
            f"{values.quantile(0.95):.3f} | {values.min():.3f} / {values.max():.3f} | "
            f"{spearman(column)} |"
        )
    r_with = stats.pearsonr(table["gm_fraction_with"], table["age"])[0]
    r_without = stats.pearsonr(table["gm_fraction_without"], table["age"])[0]
    low, high = CONTRAST_POWER_LIMITS
    capped = int(((table["power"] <= low + 1e-6) | (table["power"] >= high - 1e-6)).sum())
    lines += [
        "",
        f"Pearson r of the GM fraction with age: {r_with:+.3f} with the step, "
        f"{r_without:+.3f} without. Powers at the {low:g} / {high:g} cap: {capped}.",
    ]
    extremes = table.reindex(table["delta_gm_pct"].abs().sort_values(ascending=False).index)
    lines += ["", "Largest GM changes:", ""]
    for _, row in extremes.head(4).iterrows():
        lines.append(
            f"- {row['participant']} ({row['age']:.1f} y): ratio {row['ratio']:.3f}, power "
            f"{row['power']:.3f}, GM {row['delta_gm_pct']:+.2f} %, WM {row['delta_wm_pct']:+.2f} %"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("with_step", type=Path)
    parser.add_argument("without_step", type=Path)
    parser.add_argument("--bids-dir", type=Path, default=IXI, help="where participants.tsv is")
    args = parser.parse_args(argv)
    demographics, _ = read_participants(args.bids_dir)
    ages = {label: d.age for label, d in demographics.items() if d.age is not None}
    table = scan_table(args.with_step, args.without_step, ages)
    if table.empty:
        parser.error(f"no scan is in both {args.with_step} and {args.without_step} with an age")
    print(report(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
