"""Which step of the preprocessing a change of contrast or noise moves: tissue volumes of copies of
real IXI scans with registration and Atropos each on the intensities or on their log.

    python benchmarks/intensity_scales.py --participants sub-IXI096 sub-IXI383 sub-IXI175 \\
        [--keep DIR] [--nprocs 2]

Each scan is copied with gamma 0.8 and a ±20 % bias field (the invariance benchmark's
``gammabias``) and with 10 % Rician noise. The participant level (``--model none``) runs on
the originals and the copies twice, without and with ``--denoising rician``, for their N4 images
and brain masks. On those, every ``--intensity-scale`` setting (``INTENSITY_SETTINGS``)
registers to the template and segments with the package's own functions, and the table gives
each copy's change of GM, WM and CSF volume against its original, with the same denoising.
Issue 18's target for tissue volumes: within 3 %. Prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from invariance import IXI_DIR, add_scan, named_subjects, write_dataset  # noqa: E402

from bids_brainage.preprocessing.anatomical import (  # noqa: E402
    INTENSITY_SETTINGS,
    intensity_steps,
    register_to_template,
    segment,
)
from bids_brainage.synthetic.nuisance import gamma_and_bias, rician_noise  # noqa: E402
from bids_brainage.utils.templates import resolve_template  # noqa: E402

COPIES = {"gamma": ("gamma 0.8, ±20 % bias field", gamma_and_bias),
          "noise10": ("Rician noise, 10 %", lambda img: rician_noise(img, 0.10, 0))}  # fmt:skip
DENOISING = ("none", "rician")
TARGET_VOLUME = 3.0


def participant(bids: Path, out: Path, work: Path, denoising: str, nprocs: int) -> None:
    cmd = [sys.executable, "-m", "bids_brainage.cli.run", str(bids), str(out), "participant",
           "--model", "none", "--denoising", denoising, "-w", str(work), "--nprocs", str(nprocs),
           "--skip-bids-validation", "--no-reports"]  # fmt:skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])


def volumes(out: Path, label: str, setting: str, template, scratch: Path) -> dict:
    """GM/WM/CSF ml of one scan's N4 image and mask, registered and segmented per ``setting``."""
    anat = out / f"sub-{label}" / "anat"
    n4 = anat / f"sub-{label}_desc-preproc_T1w.nii.gz"
    mask = anat / f"sub-{label}_desc-brain_mask.nii.gz"
    registration, segmentation = intensity_steps(setting)
    transforms, qc = register_to_template(n4, mask, template, None, "fast", scratch, registration)
    probabilities, _ = segment(n4, mask, template, transforms, segmentation)
    voxel_ml = float(np.prod(nb.load(n4).header.get_zooms()[:3])) / 1000
    return {"registration_correlation": qc["registration_correlation"],
            **{t.lower(): float(p.sum()) * voxel_ml for t, p in probabilities.items()}}  # fmt:skip


def run(subjects: pd.DataFrame, root: Path, nprocs: int) -> pd.DataFrame:
    bids = root / "bids"
    bids.mkdir(parents=True, exist_ok=True)
    rows, labels = [], []
    for row in subjects.itertuples():
        sid = row.participant_id
        label = sid.removeprefix("sub-").replace("IXI", "ixi")
        img = nb.load(IXI_DIR[0] / sid / "anat" / f"{sid}_T1w.nii.gz")
        for name, (_, transform) in {"orig": (None, lambda i: i), **COPIES}.items():
            add_scan(bids, f"{label}{name}", transform(img))
            rows.append({"participant_id": f"sub-{label}{name}", "age": row.age})
        labels.append(label)
    write_dataset(bids, rows)
    template = resolve_template(root / "templates", 2)
    records = []
    for denoising in DENOISING:
        out = root / f"out-{denoising}"
        participant(bids, out, root / f"work-{denoising}", denoising, nprocs)
        for label in labels:
            for setting in INTENSITY_SETTINGS:
                with tempfile.TemporaryDirectory() as scratch:
                    measured = {name: volumes(out, f"{label}{name}", setting, template,
                                              Path(scratch))
                                for name in ("orig", *COPIES)}  # fmt:skip
                base = measured["orig"]
                for name in COPIES:
                    copy = measured[name]
                    records.append({
                        "subject": label, "denoising": denoising, "setting": setting,
                        "copy": name, "orig_gm_ml": base["gm"],
                        "orig_registration_correlation": base["registration_correlation"],
                        **{f"delta_{t}_pct": 100 * (copy[t] - base[t]) / base[t]
                           for t in ("gm", "wm", "csf")},
                    })  # fmt:skip
    return pd.DataFrame(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", nargs="+", metavar="LABEL", required=True,
                        help="IXI participants (sub-IXI096 ...)")  # fmt:skip
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep the copies and outputs in this folder")
    parser.add_argument("--save", type=Path, help="write the per-scan table as TSV")
    opts = parser.parse_args()
    root = opts.keep or Path(tempfile.mkdtemp(prefix="intensity_scales_"))
    started = time.perf_counter()
    try:
        records = run(named_subjects(opts.participants), root, opts.nprocs)
    finally:
        if opts.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    if opts.save:
        records.to_csv(opts.save, sep="\t", index=False)
    print(f"{len(opts.participants)} IXI scans, {time.perf_counter() - started:.0f} s\n")
    print("| copy | denoising | --intensity-scale | Δ GM % | Δ WM % | Δ CSF % | "
          "max abs Δ volume % | within 3 % |")  # fmt:skip
    print("|---|---|---|---|---|---|---|---|")
    for (name, denoising, setting), group in records.groupby(["copy", "denoising", "setting"],
                                                             sort=False):  # fmt:skip
        cells = [", ".join(f"{v:+.2f}" for v in group[f"delta_{t}_pct"])
                 for t in ("gm", "wm", "csf")]  # fmt:skip
        worst = group[["delta_gm_pct", "delta_wm_pct", "delta_csf_pct"]].abs().to_numpy().max()
        print(
            f"| {COPIES[name][0]} | {denoising} | {setting} | {' | '.join(cells)} | "
            f"{worst:.2f} | {'yes' if worst <= TARGET_VOLUME else 'no'} |"
        )
    print("\nOriginals, GM ml and registration correlation per setting:")
    firsts = records.drop_duplicates(["subject", "denoising", "setting"])
    for row in firsts.itertuples():
        print(
            f"  {row.subject} {row.denoising} {row.setting}: GM {row.orig_gm_ml:.1f} ml, "
            f"r {row.orig_registration_correlation:.4f}"
        )


if __name__ == "__main__":
    main()
