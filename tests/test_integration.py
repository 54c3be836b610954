"""The real graph on real IXI scans from ../shared/data (skipped where that folder is absent)."""

import json

import nibabel as nb
import numpy as np
import pytest

from bids_brainage.cli.run import main
from bids_brainage.utils.bids import run_bids_validator

from .conftest import relative_files, tree_digest

pytestmark = pytest.mark.integration
SUBJECTS = ["IXI443", "IXI096"]


@pytest.fixture(scope="module")
def ixi_run(ixi_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ixi")
    before = tree_digest(ixi_dir)
    code = main([str(ixi_dir), str(root / "out"), "participant", "-w", str(root / "work"),
                 "--participant-label", *SUBJECTS, "--nprocs", "2"])  # fmt:skip
    return {"code": code, "out": root / "out", "before": before, "bids": ixi_dir}


def test_real_scans_are_processed_and_validate(ixi_run):
    assert ixi_run["code"] == 0
    files = [f for f in relative_files(ixi_run["out"]) if not f.startswith("logs/")]
    expected = [".bidsignore", "dataset_description.json"] + [
        f"sub-{s}/anat/sub-{s}_{suffix}"
        for s in sorted(SUBJECTS)
        for suffix in ("desc-conform_T1w.json", "desc-conform_T1w.nii.gz", "qc.json")
    ]
    assert files == expected
    assert run_bids_validator(ixi_run["out"]) == []
    assert tree_digest(ixi_run["bids"]) == ixi_run["before"]


def test_eight_bit_scaled_input_is_read_with_its_scaling(ixi_run):
    subject = SUBJECTS[0]
    raw = nb.load(ixi_run["bids"] / f"sub-{subject}/anat/sub-{subject}_T1w.nii.gz")
    out = nb.load(ixi_run["out"] / f"sub-{subject}/anat/sub-{subject}_desc-conform_T1w.nii.gz")
    qc = json.loads((ixi_run["out"] / f"sub-{subject}/anat/sub-{subject}_qc.json").read_text())
    assert raw.get_data_dtype() == np.uint8 and qc["conform"]["scl_slope_applied"]
    assert qc["conform"]["input_orientation"] == "PSR"
    expected = nb.as_closest_canonical(raw).get_fdata()
    np.testing.assert_allclose(out.get_fdata(), expected, rtol=1e-6)
    assert out.get_fdata().max() > 255  # real units, not the stored 8-bit integers
    assert qc["scan"]["site"] == "HH" and qc["flags"] == ["low_resolution"]
