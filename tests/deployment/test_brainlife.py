"""The brainlife.io App (brainlife/main) on a real IXI scan, with a stand-in `singularity`
that runs the command after the image name directly (Singularity cannot be installed here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
STAND_IN = """#!/bin/sh
# singularity exec [-e] IMAGE COMMAND...: run COMMAND here
shift
[ "$1" = "-e" ] && shift
shift
exec "$@"
"""


def test_app_writes_brainlife_outputs_for_one_t1(ixi_dir, tmp_path):
    """config.json read without jq (the python fallback, the longer path of the two)."""
    work = tmp_path / "task"
    (work / "input").mkdir(parents=True)
    shutil.copy(
        ixi_dir / "sub-IXI012" / "anat" / "sub-IXI012_T1w.nii.gz", work / "input" / "t1.nii.gz"
    )
    config = json.loads((ROOT / "brainlife" / "config.json.sample").read_text())
    config["t1"] = "input/t1.nii.gz"
    del config["age"]  # taken from _inputs[0].meta.age instead
    config["_inputs"][0]["meta"]["age"] = 38.78
    (work / "config.json").write_text(json.dumps(config))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "singularity").write_text(STAND_IN)
    (bin_dir / "singularity").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "BRAINLIFE_NO_JQ": "1"}  # fmt:skip
    done = subprocess.run(["bash", str(ROOT / "brainlife" / "main")], cwd=work, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt:skip
    assert done.returncode == 0, done.stderr[-3000:]
    product = json.loads((work / "product.json").read_text())
    assert 10 < product["predicted_age"] < 100
    assert product["interval_lower"] < product["predicted_age"] < product["interval_upper"]
    assert product["brain_pad"] == pytest.approx(product["predicted_age"] - 38.78, abs=0.01)
    assert isinstance(product["qc_flags"], list)
    kinds = [m["type"] for m in product["brainlife"]]
    assert "plotly" in kinds and "info" in kinds
    assert (work / "html" / "index.html").read_text().lstrip().lower().startswith("<!doctype")
    assert (work / "raw" / "sub-01" / "anat" / "sub-01_brainage.tsv").exists()
    assert not (work / "bids").exists() and not (work / "work").exists()
