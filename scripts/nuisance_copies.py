"""Nuisance copies of real IXI training scans, for invariance-aware training (issue 18).

    .venv/bin/python scripts/nuisance_copies.py BIDS_OUT --derivatives DIR [--sources 10]
        [--transforms xthick xcoarse ...] [--phase 0.5]

Picks N training participants spread over the age range, never the demo's sources nor the
scans of the invariance benchmark and its CI subset: the one at ``--phase`` of each of N equal
strata of the sorted ages (0.5 its middle, 0.0 its first; another phase gives other
participants). Writes a BIDS dataset of their copies
under ``TRAINING_TRANSFORMS`` (other parameters than the benchmark's) plus, once the original's
brain mask exists in DIR, a skull-stripped copy (``xstrip``) and that brain affinely aligned to
the MNI template at 1 mm (``xmnistrip``). participants.tsv names each copy's
``source_participant``: training keeps a copy in the folds of its source and never scores it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nb
import pandas as pd

from bids_brainage.synthetic.nuisance import (
    TRAINING_TRANSFORMS,
    aligned_to_template,
    skull_strip,
    template_brain,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ixi-hh-2mm"
DEMO_SOURCES = ROOT / "bids_brainage" / "data" / "demo" / "sources.tsv"
# benchmarks/invariance.py --subjects 3 and tests/integration/test_invariance.py
MASKED = ("xstrip", "xmnistrip")  # made from the original and its brain mask
BENCHMARK_SCANS = {"sub-IXI202", "sub-IXI601", "sub-IXI544", "sub-IXI096", "sub-IXI443"}


def pick_sources(n: int, phase: float = 0.5) -> pd.DataFrame:
    table = pd.read_csv(DATA / "participants.tsv", sep="\t", na_values="n/a").dropna(
        subset=["age"])  # fmt:skip
    held = set(pd.read_csv(DEMO_SOURCES, sep="\t")["source"]) | BENCHMARK_SCANS
    table = table[~table["participant_id"].isin(held)].sort_values("age")
    step = len(table) / n
    return table.iloc[[int(step * (i + phase)) for i in range(n)]]


def write_copies(sources: pd.DataFrame, bids: Path, derivatives: Path | None,
                 transforms=(*TRAINING_TRANSFORMS, *MASKED)) -> int:  # fmt:skip
    rows = []
    for row in sources.itertuples():
        sid = row.participant_id
        img = nb.load(DATA / sid / "anat" / f"{sid}_T1w.nii.gz")
        copies = {name: make for name, (_, make) in TRAINING_TRANSFORMS.items()
                  if name in transforms}  # fmt:skip
        mask = (derivatives / sid / "anat" / f"{sid}_desc-brain_mask.nii.gz"
                if derivatives else None)  # fmt:skip
        if mask is not None and mask.exists():
            if "xstrip" in transforms:
                copies["xstrip"] = lambda image, m=mask: skull_strip(image, nb.load(m))
            if "xmnistrip" in transforms:
                copies["xmnistrip"] = lambda image, m=mask: aligned_to_template(
                    skull_strip(image, nb.load(m)), template_brain()
                )
        for name, make in copies.items():
            label = f"{sid.removeprefix('sub-')}{name}"
            anat = bids / f"sub-{label}" / "anat"
            target = anat / f"sub-{label}_T1w.nii.gz"
            if not target.exists():
                anat.mkdir(parents=True, exist_ok=True)
                make(img).to_filename(target)
            rows.append({"participant_id": f"sub-{label}", "age": row.age, "sex": row.sex,
                         "site": row.site, "source_participant": sid})  # fmt:skip
    description = {
        "Name": "IXI-HH nuisance copies (training augmentation)",
        "BIDSVersion": "1.10.0",
        "License": "CC BY-SA 3.0",
        "Acknowledgements": "IXI dataset, https://brain-development.org/ixi-dataset/",
    }
    (bids / "dataset_description.json").write_text(json.dumps(description, indent=2))
    pd.DataFrame(rows).to_csv(bids / "participants.tsv", sep="\t", index=False)
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids", type=Path)
    parser.add_argument("--derivatives", type=Path, help="participant outputs of the originals")
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--phase", type=float, default=0.5,
                        help="where in each age stratum the source is taken, in [0, 1)")
    parser.add_argument("--transforms", nargs="+", default=[*TRAINING_TRANSFORMS, *MASKED],
                        choices=[*TRAINING_TRANSFORMS, *MASKED])  # fmt:skip
    opts = parser.parse_args()
    opts.bids.mkdir(parents=True, exist_ok=True)
    sources = pick_sources(opts.sources, opts.phase)
    print("sources:", " ".join(sources["participant_id"]), f"({sources['age'].min():.0f}–"
          f"{sources['age'].max():.0f} y)")  # fmt:skip
    count = write_copies(sources, opts.bids, opts.derivatives, opts.transforms)
    print(count, "copies in", opts.bids)


if __name__ == "__main__":
    main()
