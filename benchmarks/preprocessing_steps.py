"""Per-step time and peak memory of the participant level, one scan at a time.

    python benchmarks/preprocessing_steps.py [--ixi IXI443 IXI096] [--one-mm] [--omp 1]
                                             [--registration fast|precise]

Each scan is run alone, end to end, through the command line with a fresh work folder
(``--nprocs 2 --omp-nthreads OMP --registration PRESET``), under ``/usr/bin/time`` for the
peak resident memory of the whole run. Per-step times are read back from Nipype's node
results. ``--one-mm`` adds a 1 mm synthetic head (192 x 232 x 212 mm field of view) made by
``bids_brainage.synthetic``.
Prints Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IXI = ROOT.parent / "shared" / "data" / "ixi-hh-2mm"
STEPS = ["conform", "n4", "brain_extraction", "registration", "segmentation", "measures",
         "template_maps"]  # fmt:skip


def node_durations(work: Path) -> dict[str, float]:
    from nipype.utils.filemanip import loadpkl

    durations = {}
    for step in STEPS:
        for result in work.rglob(f"{step}/result_{step}.pklz"):
            durations[step] = loadpkl(result).runtime.duration
    return durations


def run_case(bids_dir: Path, label: str, omp: int, tmp: Path, registration: str) -> dict:
    work, out = tmp / f"work_{label}", tmp / f"out_{label}"
    cmd = ["/usr/bin/time", "-f", "MAXRSS_KB=%M", sys.executable, "-m", "bids_brainage",
           str(bids_dir), str(out), "participant", "-w", str(work), "--participant-label", label,
           "--nprocs", "2", "--omp-nthreads", str(omp), "--skip-bids-validation",
           "--registration", registration]  # fmt:skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    peak_kb = int(re.search(r"MAXRSS_KB=(\d+)", proc.stderr).group(1))
    return {"label": label, "wall": wall, "peak_mb": peak_kb / 1024, **node_durations(work)}


def one_mm_dataset(tmp: Path) -> Path:
    from bids_brainage.synthetic.acquisition import Site
    from bids_brainage.synthetic.dataset import make_dataset

    site = Site("site1mm", voxel_mm=(1.0, 1.0, 1.0), orientation="RAS", dtype="int16")
    make_dataset(tmp / "onemm", n_subjects=1, n_patients=0, n_rescans=0, sites=(site,),
                 voxel_mm=1.0)  # fmt:skip
    return tmp / "onemm" / "bids"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ixi", nargs="*", default=["IXI443", "IXI096"])
    parser.add_argument("--one-mm", action="store_true")
    parser.add_argument("--omp", type=int, default=1)
    parser.add_argument("--registration", choices=("fast", "precise"), default="fast")
    opts = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label in opts.ixi:
            rows.append(
                ("IXI 2 mm " + label, run_case(IXI, label, opts.omp, tmp, opts.registration))
            )
        if opts.one_mm:
            rows.append(
                (
                    "synthetic 1 mm",
                    run_case(one_mm_dataset(tmp), "01", opts.omp, tmp, opts.registration),
                )
            )
    print("| scan | " + " | ".join(STEPS) + " | whole run (wall) | peak RSS |")
    print("|---" * (len(STEPS) + 3) + "|")
    for name, row in rows:
        steps = " | ".join(f"{row.get(step, float('nan')):.1f} s" for step in STEPS)
        print(f"| {name} | {steps} | {row['wall']:.1f} s | {row['peak_mb']:.0f} MB |")


if __name__ == "__main__":
    main()
