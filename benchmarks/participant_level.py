"""Time and peak memory of the participant level on real IXI scans (and the demo's data).

    python benchmarks/participant_level.py [--subjects 10] [--nprocs 2]

Runs ``bids_brainage ... participant`` in a child process on the first N IXI participants of
../shared/data/ixi-hh-2mm, twice: a cold run (empty work folder) and a warm run (cached), and
prints a Markdown table row for docs/benchmarks.md. Peak memory is the largest resident set of
any process of the run (ru_maxrss of the children).
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
IXI = ROOT.parent / "shared" / "data" / "ixi-hh-2mm"


def run_once(bids_dir: Path, labels: list[str], out: Path, work: Path, nprocs: int) -> float:
    cmd = [sys.executable, "-m", "bids_brainage", str(bids_dir), str(out), "participant",
           "-w", str(work), "--nprocs", str(nprocs), "--participant-label", *labels]  # fmt:skip
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--nprocs", type=int, default=2)
    opts = parser.parse_args()
    if not IXI.exists():
        sys.exit(f"{IXI} not found")
    labels = pd.read_csv(IXI / "participants.tsv", sep="\t")["participant_id"].head(opts.subjects)
    labels = [label.removeprefix("sub-") for label in labels]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cold = run_once(IXI, labels, tmp / "out", tmp / "work", opts.nprocs)
        warm = run_once(IXI, labels, tmp / "out", tmp / "work", opts.nprocs)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"| {platform.node()} | {len(labels)} IXI 2 mm | {opts.nprocs} | {cold:.1f} s | "
          f"{cold / len(labels):.2f} s | {warm:.1f} s | {peak_mb:.0f} MB |")  # fmt:skip


if __name__ == "__main__":
    main()
