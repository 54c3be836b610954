"""One participant per SLURM job, then the group job (issue 16), on a real one-node cluster
brought up by scripts/slurm/cluster.sh; and Nipype's SLURM plugin through --use-plugin.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bids_brainage.utils.bids import copy_participants

from .conftest import require_root_on_debian

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "scripts" / "slurm" / "cluster.sh"
SCANS = ("IXI012", "IXI014", "IXI015")
BROKEN = "IXI015"
APP = str(Path(sys.executable).parent / "bids_brainage")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """SLURM_CONF of a running cluster; stopped afterwards only if this fixture started it."""
    require_root_on_debian()
    status = subprocess.run(["bash", str(CLUSTER), "status"], capture_output=True, text=True)
    started_here = "slurmctld: running" not in status.stdout
    up = subprocess.run(["bash", str(CLUSTER), "up"], capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    conf = up.stdout.strip().split("=", 1)[1]
    yield {**os.environ, "SLURM_CONF": conf}
    if started_here:
        subprocess.run(["bash", str(CLUSTER), "down"], check=False)


@pytest.fixture(scope="module")
def dataset(ixi_dir, tmp_path_factory):
    bids = copy_participants(ixi_dir, tmp_path_factory.mktemp("slurm") / "bids", list(SCANS))
    broken = bids / f"sub-{BROKEN}" / "anat" / f"sub-{BROKEN}_T1w.nii.gz"
    broken.write_bytes(broken.read_bytes()[:5000])  # truncated: not a readable image
    return bids


def wait(env, *jobs, timeout=1500):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-j", ",".join(jobs), "-o", "%i"], env=env,
                               capture_output=True, text=True)  # fmt:skip
        if not queue.stdout.strip():
            return
        time.sleep(2)
    raise AssertionError(f"jobs {jobs} still queued after {timeout} s")


@pytest.fixture(scope="module")
def submitted(slurm, dataset):
    out = dataset.parent / "out"
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "slurm" / "submit.sh"), str(dataset), str(out),
         "--skip-bids-validation", "--omp-nthreads", "1"],
        env={**slurm, "BRAINAGE_CMD": APP, "PARTICIPANT_SBATCH": "--mem=4G",
             "WORK_ROOT": str(dataset.parent / "work")},
        capture_output=True, text=True)  # fmt:skip
    assert done.returncode == 0, done.stderr
    array, group = done.stdout.split()
    wait(slurm, array, group)
    return out, array, group, time.monotonic() - started


def test_array_then_group_with_one_broken_scan(submitted):
    out, array, group, elapsed = submitted
    good = [s for s in SCANS if s != BROKEN]
    for label in good:
        assert (out / f"sub-{label}" / "anat" / f"sub-{label}_brainage.tsv").exists()
    assert not (out / f"sub-{BROKEN}" / "anat" / f"sub-{BROKEN}_brainage.tsv").exists()
    scans = pd.read_csv(out / "group" / "group_scans.tsv", sep="\t")
    assert sorted(scans["participant_id"]) == [f"sub-{s}" for s in good]
    log = (out / "logs" / f"slurm-{group}-group.out").read_text()
    assert f"participant task of sub-{BROKEN}" in log and "failed" in log
    assert f"{len(good)} of {len(SCANS)} participant task(s) succeeded" in log
    assert f"sub-{BROKEN}" in (out / "group.html").read_text()
    tasks = pd.read_csv(out / "logs" / f"slurm-{array}-tasks.tsv", sep="\t", header=None)
    assert sorted(tasks[0]) == list(SCANS) and (tasks[2] != 0).sum() == 1
    print(f"3 scans through SLURM (array + group): {elapsed:.0f} s")


def test_nipype_slurm_plugin_matches_multiproc_byte_for_byte(slurm, dataset, submitted, tmp_path):
    multiproc_out = submitted[0]
    plugin = tmp_path / "plugin.yml"
    plugin.write_text("plugin: SLURM\nplugin_args:\n  sbatch_args: --mem=2G\n")
    out = tmp_path / "out"
    good = [s for s in SCANS if s != BROKEN]
    done = subprocess.run(
        [APP, str(dataset), str(out), "participant", "--use-plugin", str(plugin),
         "--skip-bids-validation", "--omp-nthreads", "1", "-w", str(tmp_path / "work"),
         "--participant-label", *good],
        env=slurm, capture_output=True, text=True, timeout=1800)  # fmt:skip
    assert done.returncode == 0, done.stderr[-3000:]
    for label in good:
        name = f"sub-{label}/anat/sub-{label}_brainage.tsv"
        assert (out / name).read_bytes() == (multiproc_out / name).read_bytes()
