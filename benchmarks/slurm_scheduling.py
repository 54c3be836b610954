"""SLURM timings (issue 16): submission to first task, a whole ``submit.sh`` run, and the
participant level through Nipype's SLURM plugin against MultiProc (wall time, and whether the
brain-age tables are byte-identical).

    python benchmarks/slurm_scheduling.py [--subjects 3]

Brings up the one-node cluster of scripts/slurm/cluster.sh if it is not running (and takes it
down at the end only then). Root on Debian, like tests/deployment. Times come from SLURM's own
job records (``scontrol show job``: SubmitTime, StartTime, EndTime; one-second resolution).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pandas as pd

from bids_brainage.utils.bids import copy_participants

ROOT = Path(__file__).resolve().parents[1]
IXI = ROOT.parent / "shared" / "data" / "ixi-hh-2mm"
CLUSTER = ROOT / "scripts" / "slurm" / "cluster.sh"
APP = str(Path(sys.executable).parent / "bids_brainage")


def job_times(job: str, env: dict) -> list[dict]:
    """Submit, start and end of every job record of ``job`` (array tasks included)."""
    shown = subprocess.run(["scontrol", "-o", "show", "job", job], env=env, capture_output=True,
                           text=True).stdout  # fmt:skip
    records = []
    for line in shown.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S+)", line))
        times = {k: fields.get(k) for k in ("SubmitTime", "StartTime", "EndTime")}
        if all(v and v not in ("Unknown", "None") for v in times.values()):
            records.append({k: datetime.fromisoformat(v) for k, v in times.items()})
    return records


def wait_recording(jobs: list[str], env: dict) -> dict[str, list[dict]]:
    """Poll until the jobs leave the queue, keeping the last job records seen."""
    seen: dict[str, list[dict]] = {}
    while True:
        for job in jobs:
            seen[job] = job_times(job, env) or seen.get(job, [])
        queue = subprocess.run(["squeue", "-h", "-j", ",".join(jobs), "-o", "%i"], env=env,
                               capture_output=True, text=True).stdout  # fmt:skip
        if not queue.strip():
            for job in jobs:  # the final records (kept MinJobAge seconds after the end)
                seen[job] = job_times(job, env) or seen[job]
            return seen
        time.sleep(1)


def timed(cmd: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=3)
    opts = parser.parse_args()
    status = subprocess.run(["bash", str(CLUSTER), "status"], capture_output=True, text=True)
    started_here = "slurmctld: running" not in status.stdout
    up = subprocess.run(["bash", str(CLUSTER), "up"], capture_output=True, text=True, check=True)
    env = {**os.environ, "SLURM_CONF": up.stdout.strip().split("=", 1)[1]}
    labels = [p.removeprefix("sub-") for p in pd.read_csv(
        IXI / "participants.tsv", sep="\t")["participant_id"].head(opts.subjects)]  # fmt:skip
    common = ["--skip-bids-validation", "--omp-nthreads", "1"]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            bids = copy_participants(IXI, tmp / "bids", labels)
            begun = time.perf_counter()
            submitted = subprocess.run(
                ["bash", str(ROOT / "scripts" / "slurm" / "submit.sh"), str(bids),
                 str(tmp / "out"), *common],
                env={**env, "BRAINAGE_CMD": APP, "WORK_ROOT": str(tmp / "work")},
                capture_output=True, text=True, check=True)  # fmt:skip
            array, group = submitted.stdout.split()
            records = wait_recording([array, group], env)
            whole = time.perf_counter() - begun
            tasks = records[array]
            submit = min(r["SubmitTime"] for r in tasks)
            first = min(r["StartTime"] for r in tasks)
            last_end = max(r["EndTime"] for r in tasks)
            group_start = records[group][0]["StartTime"] if records[group] else None
            print(f"submit.sh, {len(labels)} IXI scans: submission to first task "
                  f"{(first - submit).total_seconds():.0f} s; array done "
                  f"{(last_end - submit).total_seconds():.0f} s after submission; last task "
                  f"end to group start {(group_start - last_end).total_seconds():.0f} s; "
                  f"whole run (submit.sh to the group job's end) {whole:.0f} s")  # fmt:skip
            pair = labels[:2]
            plugins = {}
            for name in ("SLURM", "SLURMGraph"):
                plugins[name] = tmp / f"{name}.yml"
                plugins[name].write_text(f"plugin: {name}\nplugin_args:\n  sbatch_args: "
                                         "--mem=2G\n")  # fmt:skip
            runs = {}
            for name, extra in (("MultiProc", ["--nprocs", "2"]),
                                ("SLURM plugin", ["--use-plugin", str(plugins["SLURM"])]),
                                ("SLURMGraph plugin",
                                 ["--use-plugin", str(plugins["SLURMGraph"])])):  # fmt:skip
                out = tmp / name.replace(" ", "_")
                runs[name] = (out, timed([APP, str(bids), str(out), "participant", *common,
                                          *extra, "-w", str(tmp / f"work_{out.name}"),
                                          "--participant-label", *pair], env))  # fmt:skip
            def table(run: str, label: str) -> bytes:
                return (runs[run][0] / f"sub-{label}/anat/sub-{label}_brainage.tsv").read_bytes()

            for name in ("SLURM plugin", "SLURMGraph plugin"):
                same = all(table("MultiProc", s) == table(name, s) for s in pair)
                print(f"participant level on {len(pair)} scans: MultiProc (2 processes) "
                      f"{runs['MultiProc'][1]:.0f} s, {name} {runs[name][1]:.0f} s; brain-age "
                      f"tables byte-identical: {same}")  # fmt:skip
    finally:
        if started_here:
            subprocess.run(["bash", str(CLUSTER), "down"], check=False)


if __name__ == "__main__":
    main()
