"""The group level on N synthetic participants with 2 mm local brain-age maps (target: 1000 in
<= 60 s and <= 4 GB on 2 cores).

    python benchmarks/group_statistics.py [--participants 1000] [--rescans 100] [--folder DIR]
                                          [--reuse]

Writes participant-level derivatives (QC JSON, _brainage.tsv, a 97 x 115 x 97 local brain-age
map and an ROI table per scan; not timed), then runs ``bids_brainage ... group --nprocs 2`` in a
fresh process; wall time and peak memory cover everything the group level does (collect, bias
correction, global/ROI/voxel-wise statistics, maps, group.html). Memory is the peak of the
summed RSS of the whole process tree (the main process and its workers), sampled every 50 ms
from /proc.
Prints a Markdown table row for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = (97, 115, 97)  # MNI152NLin2009cSym at 2 mm, the participant level's template grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=1000)
    parser.add_argument("--rescans", type=int, default=100)
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--reuse", action="store_true", help="keep data already in --folder")
    opts = parser.parse_args()
    from bids_brainage.synthetic.predictions import make_prediction_derivatives

    folder = opts.folder or Path(tempfile.mkdtemp(prefix="group_bench_"))
    data = {"bids": folder / "bids", "derivatives": folder / "derivatives"}
    if not (opts.reuse and (folder / "ground_truth.json").exists()):
        shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        n_patients = opts.participants // 3
        make_prediction_derivatives(folder, opts.participants - n_patients, n_patients,
                                    n_rescans=opts.rescans, local_maps=True, map_shape=GRID,
                                    map_voxel_mm=2.0, seed=1)  # fmt:skip
        print(f"generated {opts.participants} participants (+{opts.rescans} rescans) in "
              f"{time.perf_counter() - started:.0f} s", file=sys.stderr)  # fmt:skip
    shutil.rmtree(folder / "work", ignore_errors=True)
    shutil.rmtree(data["derivatives"] / "group", ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "bids_brainage",
        str(data["bids"]),
        str(data["derivatives"]),
        "group",
        "--nprocs",
        "2",
        "-w",
        str(folder / "work"),
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - started
    output = proc.stdout.read()
    if proc.returncode:
        sys.exit(output)
    print(output)
    print("| participants | rescan pairs | maps | wall (s) | peak RSS, all processes (GB) |")
    print("|---|---|---|---|---|")
    print(f"| {opts.participants} | {opts.rescans} | {opts.participants + opts.rescans} | "
          f"{wall:.1f} | {peak / 1024**3:.2f} |")  # fmt:skip


def tree_rss(root: int) -> int:
    """Bytes resident in ``root`` and all its descendants."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, changed = {root}, True
    while changed:
        grown = tree | {pid for pid, parent in parents.items() if parent in tree}
        changed, tree = grown != tree, grown
    total = 0
    for pid in tree:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024
        except (OSError, AttributeError):
            continue
    return total


if __name__ == "__main__":
    main()
