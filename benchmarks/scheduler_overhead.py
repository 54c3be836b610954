"""What Nipype's scheduler costs: wall time and the CPU of the main process of a participant
run, at several MultiProc poll intervals.

    python benchmarks/scheduler_overhead.py [--subjects 10] [--nprocs 2] [--poll 0.05 0.5]

Each interval runs ``bids_brainage ... participant`` in this process (cold: a new output and
work folder) on the first N IXI participants of ../shared/data/ixi-hh-2mm. The main process's
CPU (``time.process_time``) is the scheduler plus what Nipype runs in it (the sinks); the
workers are child processes and do not count. Prints Markdown rows for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bids_brainage.cli import workflow
from bids_brainage.cli.run import main as bids_brainage

ROOT = Path(__file__).resolve().parents[1]
IXI = ROOT.parent / "shared" / "data" / "ixi-hh-2mm"


def run_once(labels: list[str], folder: Path, nprocs: int, poll: float) -> tuple[float, float]:
    workflow.MULTIPROC_POLL_S = poll
    argv = [str(IXI), str(folder / "out"), "participant", "-w", str(folder / "work"),
            "--nprocs", str(nprocs), "--participant-label", *labels, "-q"]  # fmt:skip
    wall, cpu = time.perf_counter(), time.process_time()
    code = bids_brainage(argv)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if code:
        sys.exit(f"participant level failed with exit code {code}")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--poll", type=float, nargs="+", default=[0.05, 0.5])
    opts = parser.parse_args()
    if not IXI.exists():
        sys.exit(f"{IXI} not found")
    labels = pd.read_csv(IXI / "participants.tsv", sep="\t")["participant_id"].head(opts.subjects)
    labels = [label.removeprefix("sub-") for label in labels]
    print("| poll interval | scans | wall | main-process CPU | share of one core |")
    print("|---|---|---|---|---|")
    for poll in opts.poll:
        with tempfile.TemporaryDirectory() as tmp:
            wall, cpu = run_once(labels, Path(tmp), opts.nprocs, poll)
        print(f"| {poll:g} s | {len(labels)} | {wall:.0f} s | {cpu:.0f} s | "
              f"{100 * cpu / wall:.0f} % |", flush=True)  # fmt:skip


if __name__ == "__main__":
    main()
