"""``bids_brainage-demo [FOLDER]``: the whole app end to end on eight real IXI scans.

Copies the packaged demo dataset (seven IXI participants aged 21 to 74 whom the packaged models
never saw; two with a planted temporal atrophy, one scanned twice), runs the participant level
and the group level exactly as a user would, checks the derivatives with the official BIDS
validator, and prints each scan's brain age beside its true age, the planted effect and the
rescan agreement.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from importlib.resources import files
from pathlib import Path

import pandas as pd

from .cli.run import main as bids_brainage
from .models.bundle import DEFAULT_BUNDLE, resolve_bundle
from .preprocessing.qc import UNTRUSTWORTHY_FLAGS
from .utils.bids import format_validator_issue, run_bids_validator

DEMO_DATASET = files("bids_brainage") / "data" / "demo" / "bids"


def copy_demo_dataset(target: Path) -> Path:
    """The packaged demo BIDS dataset, copied to ``target`` (kept if already there)."""
    if not (target / "dataset_description.json").exists():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(str(DEMO_DATASET), target)
    return target


def error_table(scans: pd.DataFrame, model: str) -> pd.DataFrame:
    """One row per scan: true age, the model's brain age, its error and corrected brain-PAD."""
    table = pd.DataFrame({
        "scan": scans["participant_id"] + " " + scans["session_id"].fillna(""),
        "group": scans["group"],
        "age": scans["age"],
        "brain_age": scans[f"{model}_predicted_age"],
        "corrected_pad": scans.get(f"{model}_brain_pad_corrected"),
        "flags": scans["qc_flags"].fillna("none"),
    })  # fmt:skip
    table["error"] = table["brain_age"] - table["age"]
    return table


def describe_demo(output_dir: Path, model: str) -> list[str]:
    """The lines that tell a newcomer whether the brain ages and the planted effect came out."""
    group = output_dir / "group"
    scans = pd.read_csv(group / "group_scans.tsv", sep="\t", na_values="n/a")
    table = error_table(scans, model)
    lines = [f"{'scan':22s} {'group':5s} {'age':>6s} {'brain age':>9s} {'error':>7s}  flags"]
    for row in table.itertuples():
        lines.append(f"{row.scan:22s} {row.group:5s} {row.age:6.1f} {row.brain_age:9.1f} "
                     f"{row.error:+7.1f}  {row.flags}")  # fmt:skip
    flags = {f for text in table["flags"] for f in text.split(",") if f != "none"}
    if flags:
        serious = sorted(flags & UNTRUSTWORTHY_FLAGS)
        lines.append(
            f"QC flags {', '.join(serious)} mark predictions not to trust" if serious
            else f"QC flags ({', '.join(sorted(flags))}) describe the input only"
            + ("; low_resolution: voxels over 1.5 mm, as in the IXI scans of training"
               if "low_resolution" in flags else "")
        )  # fmt:skip
    controls = table[table["group"] == "HC"]
    mae = controls["error"].abs().mean()
    lines.append(f"mean absolute error on the {len(controls)} control scans: {mae:.1f} y "
                 f"(model {model}, out of sample)")  # fmt:skip
    stats = group / "group_desc-groups_stats.tsv"
    if stats.exists():
        found = pd.read_csv(stats, sep="\t", na_values="n/a")
        chosen = found[(found["model"] == model) & (found["measure"] == "brain_pad_corrected")]
        for row in chosen.itertuples():
            test = f", Cohen's d {row.cohens_d:.2f}" if math.isfinite(row.cohens_d) else ""
            lines.append(f"planted atrophy: {row.group1} vs {row.group2} corrected brain-PAD "
                         f"difference {row.difference:+.1f} y{test} (expected: > 0)")  # fmt:skip
    rescan = table[table["scan"].str.startswith("sub-IXI162")]
    if len(rescan) == 2:
        first, second = rescan["brain_age"]
        lines.append(f"rescan of sub-IXI162 (moved, reoriented, re-noised): {first:.1f} and "
                     f"{second:.1f} y, {abs(second - first):.1f} y apart")  # fmt:skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bids_brainage-demo", description=__doc__)
    parser.add_argument(
        "folder",
        nargs="?",
        type=Path,
        default=Path("brainage-demo"),
        help="where the demo dataset, derivatives and work folder go",
    )
    parser.add_argument("--nprocs", type=int, default=2, help="processes for the pipeline")
    opts = parser.parse_args(argv)  # fmt:skip

    root = opts.folder.absolute()
    bids_dir, output_dir, work_dir = root / "bids", root / "derivatives", root / "work"
    started = time.monotonic()
    print(f"[1/4] copying the demo dataset (8 real IXI T1w scans, CC BY-SA 3.0) to {bids_dir}")
    copy_demo_dataset(bids_dir)
    common = [str(bids_dir), str(output_dir)]
    print("[2/4] bids_brainage ... participant")
    code = bids_brainage([*common, "participant", "-w", str(work_dir), "--nprocs",
                          str(opts.nprocs)])  # fmt:skip
    if code:
        print(f"participant level failed (exit {code})", file=sys.stderr)
        return code
    print("[3/4] bids_brainage ... group")
    code = bids_brainage([*common, "group", "-w", str(work_dir)])
    if code:
        print(f"group level failed (exit {code})", file=sys.stderr)
        return code
    print("[4/4] checking the derivatives with the official BIDS validator")
    errors = run_bids_validator(output_dir)
    for issue in errors:
        print(f"  - {format_validator_issue(issue)}", file=sys.stderr)
    if errors:
        return 1
    card = resolve_bundle(DEFAULT_BUNDLE) / "model.json"
    model = json.loads(card.read_text())["name"]
    print("\n" + "\n".join(describe_demo(output_dir, model)))
    print(
        f"\nDone in {time.monotonic() - started:.0f} s, validator: 0 errors.\n"
        f"  input dataset:    {bids_dir} (what was done to each scan: its README)\n"
        f"  derivatives:      {output_dir}\n"
        f"  group table:      {output_dir / 'group' / 'group_scans.tsv'}\n"
        f"  group report:     {output_dir / 'group.html'}\n"
        f"  subject reports:  {output_dir}/sub-*.html\n"
        f"  logs and methods: {output_dir / 'logs'}\n"
        "Each scan's brain age is in its *_brainage.tsv; local brain-age, local PAD, occlusion "
        "and\nU-noise maps in its *_desc-{local,localpad,occlusion,unoise}_brainage.nii.gz."
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
