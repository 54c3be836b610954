"""The image, built and run as the bids-apps organisation's CI runs apps (issue 17):
scripts/container_test.sh does it all and fails on the first broken check.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import require_root_on_debian

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_image_builds_and_runs_read_only_offline_as_user_1000(ixi_dir):
    require_root_on_debian()
    done = subprocess.run(["bash", str(ROOT / "scripts" / "container_test.sh")],
                          capture_output=True, text=True, timeout=1800)  # fmt:skip
    print(done.stdout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any("participant IXI012: rc 0" in line for line in lines)
    assert any("group: rc 0" in line for line in lines)
    assert any("BIDS_DIR checksum unchanged" in line for line in lines)
    assert any("unwritable /out" in line for line in lines)
    assert any("bosh exec launch: rc 0" in line for line in lines)
    assert lines[-1] == "container_test: all checks passed"
