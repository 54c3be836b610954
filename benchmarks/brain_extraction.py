"""Template-based brain extraction against deepbet on real IXI heads: Dice, volumes, time.

    python benchmarks/brain_extraction.py [--subjects 10] [--threads 2]

For the first N IXI participants (spread over the age range): conform, N4, then both masks
from the same N4 image (``bids_brainage.preprocessing.anatomical.brain_extract`` with
``method="template"`` and ``method="deepbet"``). Prints a Markdown table: Dice between the
masks, each mask's volume (ml) and the time to make it on this machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
IXI = ROOT.parent / "shared" / "data" / "ixi-hh-2mm"
sys.path.insert(0, str(ROOT))

from bids_brainage.preprocessing.anatomical import (  # noqa: E402
    brain_extract,
    deepbet_mask,
    n4_correct,
)
from bids_brainage.preprocessing.conform import conform_t1w  # noqa: E402
from bids_brainage.utils.templates import resolve_template  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ixi", type=Path, default=IXI)
    opts = parser.parse_args()
    table = pd.read_csv(opts.ixi / "participants.tsv", sep="\t", na_values="n/a").dropna(
        subset=["age"]).sort_values("age")  # fmt:skip
    table = table.iloc[:: max(1, len(table) // opts.subjects)].head(opts.subjects)
    work = Path(tempfile.mkdtemp(prefix="bet_"))
    template = resolve_template(work / "templates", resolution=2)
    rows = []
    for row in table.itertuples():
        sid = row.participant_id
        scan = work / sid
        scan.mkdir()
        conform_t1w(opts.ixi / sid / "anat" / f"{sid}_T1w.nii.gz", scan / "conformed.nii.gz")
        n4_correct(scan / "conformed.nii.gz", scan / "n4.nii.gz")
        masks, seconds = {}, {}
        for method in ("template", "deepbet"):
            started = time.perf_counter()
            brain_extract(scan / "n4.nii.gz", template, scan / f"{method}.nii.gz", scan,
                          method=method, threads=opts.threads)  # fmt:skip
            seconds[method] = time.perf_counter() - started
            masks[method] = np.asarray(nb.load(scan / f"{method}.nii.gz").dataobj) > 0.5
        started = time.perf_counter()
        deepbet_mask(scan / "n4.nii.gz", opts.threads)  # the network alone (already loaded)
        mask_seconds = time.perf_counter() - started
        voxel_ml = float(np.prod(nb.load(scan / "n4.nii.gz").header.get_zooms()[:3])) / 1000
        a, b = masks["template"], masks["deepbet"]
        rows.append({"participant": sid, "age": row.age,
                     "dice": 2 * (a & b).sum() / (a.sum() + b.sum()),
                     "template_ml": a.sum() * voxel_ml, "deepbet_ml": b.sum() * voxel_ml,
                     "template_s": seconds["template"], "deepbet_s": seconds["deepbet"],
                     "deepbet_mask_s": mask_seconds})  # fmt:skip
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    print(
        "\n| participant | age | Dice | template ml | deepbet ml | template s | deepbet s "
        "(mask only) |\n|---|---|---|---|---|---|---|"
    )
    for r in frame.itertuples():
        print(
            f"| {r.participant} | {r.age:.1f} | {r.dice:.3f} | {r.template_ml:.0f} | "
            f"{r.deepbet_ml:.0f} | {r.template_s:.1f} | {r.deepbet_s:.1f} "
            f"({r.deepbet_mask_s:.1f}) |"
        )
    print(
        f"\nmedian Dice {frame.dice.median():.3f} (min {frame.dice.min():.3f}); median time "
        f"template {frame.template_s.median():.1f} s, deepbet {frame.deepbet_s.median():.1f} s "
        f"(mask {frame.deepbet_mask_s.median():.1f} s, the rest is the shared head affine)"
    )


if __name__ == "__main__":
    main()
