"""Tissue maps scaled by total intracranial volume: blind to head size and to a linear
alignment of the input to a template, which multiplies every modulated map by its determinant.
"""

import nibabel as nib
import numpy as np
import pytest

from bids_brainage.models.inputs import (
    REFERENCE_TIV_ML,
    ContractError,
    ScanFeatures,
    load_inputs,
    total_intracranial_ml,
)


def _maps(folder, factor=1.0, voxel_mm=2.0):
    """Modulated CSF/GM/WM maps of one small 'brain' (every value × ``factor``)."""
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for label, level in (("CSF", 0.2), ("GM", 0.5), ("WM", 0.3)):
        data = (level + 0.1 * rng.random((6, 7, 5))).astype(np.float32) * np.float32(factor)
        paths[label] = folder / f"{label}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.diag([voxel_mm] * 3 + [1.0])), paths[label])
    return ScanFeatures(histogram=None, tissue=paths)


def test_tiv_is_the_sum_of_the_modulated_maps_in_ml(tmp_path):
    features = _maps(tmp_path)
    by_hand = sum(float(np.asarray(nib.load(p).dataobj, np.float64).sum())
                  for p in features.tissue.values()) * 8 / 1000  # fmt:skip
    assert total_intracranial_ml(features) == pytest.approx(by_hand, rel=1e-6)


def test_tiv_scaling_removes_a_global_volume_factor(tmp_path):
    """The same brain 1.3 times larger (or linearly aligned to a larger template)."""
    small, large = _maps(tmp_path / "a"), _maps(tmp_path / "b", factor=1.3)
    raw = [load_inputs(f, "tissue") for f in (small, large)]
    np.testing.assert_allclose(raw[1], 1.3 * raw[0], rtol=1e-5)
    scaled = [load_inputs(f, "tissue", scaling="tiv") for f in (small, large)]
    np.testing.assert_allclose(scaled[1], scaled[0], rtol=1e-5)
    # scaled to a head of REFERENCE_TIV_ML: the maps sum to GM + WM of that head
    share = sum(raw[0][i].sum() for i in range(2)) * 8 / 1000 / total_intracranial_ml(small)
    assert scaled[0].sum() * 8 / 1000 == pytest.approx(share * REFERENCE_TIV_ML, rel=1e-5)


def test_tiv_scaling_without_csf_or_an_unknown_scaling_is_refused(tmp_path):
    features = _maps(tmp_path)
    load_inputs(ScanFeatures(None, {t: features.tissue[t] for t in ("GM", "WM")}), "tissue")
    with pytest.raises(ContractError, match=r"GM\.nii\.gz: the CSF modulated map is needed"):
        load_inputs(ScanFeatures(None, {t: features.tissue[t] for t in ("GM", "WM")}),
                    "tissue", scaling="tiv")  # fmt:skip
    with pytest.raises(ContractError, match="unknown tissue scaling 'icv'"):
        load_inputs(features, "tissue", scaling="icv")
