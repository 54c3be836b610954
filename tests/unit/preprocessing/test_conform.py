"""The conform step: readable 3-D brain MRI in, RAS float32 out, one-line errors otherwise."""

import gzip

import nibabel as nb
import numpy as np
import pytest

from bids_brainage.preprocessing.conform import (
    ConformLimits,
    conform_t1w,
    head_box,
    obliquity_degrees,
)
from bids_brainage.utils.bids import InputError

SHAPE = (70, 80, 90)  # asymmetric, so axis mix-ups fail


def head_like(rng, shape=SHAPE):
    data = rng.normal(100, 10, size=shape).astype(np.float32)
    data[: shape[0] // 3] += 50  # a feature to track through reorientation
    return data


def save(img, path):
    img.to_filename(str(path))
    return path


def world_value(img, xyz):
    ijk = np.round(np.linalg.inv(img.affine) @ np.r_[xyz, 1])[:3].astype(int)
    return np.asarray(img.dataobj)[tuple(ijk)]


@pytest.mark.parametrize("codes", ["LPS", "PSR", "LAS", "RAS", "ASL"])
def test_reorients_to_ras_keeping_world_positions(tmp_path, rng, codes):
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, ornt_transform

    data = head_like(rng)
    ras_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    ras_affine[:3, 3] = [-70, -80, -90]
    transform = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(tuple(codes)))
    stored = nb.orientations.apply_orientation(data, transform)
    affine = ras_affine @ inv_ornt_aff(transform, data.shape)
    src = save(nb.Nifti1Image(stored, affine), tmp_path / "in.nii.gz")
    qc = conform_t1w(src, tmp_path / "out.nii.gz", head_grid=False)
    out = nb.load(tmp_path / "out.nii.gz")
    assert nb.aff2axcodes(out.affine) == ("R", "A", "S")
    assert out.shape == SHAPE and out.get_data_dtype() == np.float32
    np.testing.assert_allclose(out.affine, ras_affine)
    for xyz in ([-60.0, -70.0, -80.0], [30.0, 10.0, 40.0], [0.0, 0.0, 0.0]):
        assert world_value(out, xyz) == pytest.approx(world_value(nb.load(src), xyz))
    assert qc["input_orientation"] == codes and qc["output_orientation"] == "RAS"


def test_uint8_with_scaling_is_read_in_real_units(tmp_path, rng):
    data = head_like(rng) * 3.7
    img = nb.Nifti1Image(data, np.diag([2, 2, 2, 1.0]))
    img.set_data_dtype(np.uint8)  # nibabel stores scl_slope/inter
    src = save(img, tmp_path / "u8.nii.gz")
    assert nb.load(src).get_data_dtype() == np.uint8
    qc = conform_t1w(src, tmp_path / "out.nii.gz", head_grid=False)
    out = nb.load(tmp_path / "out.nii.gz").get_fdata()
    assert qc["scl_slope_applied"] is True and qc["input_dtype"] == "uint8"
    assert out.max() == pytest.approx(data.max(), rel=0.01)  # not 255
    assert np.corrcoef(out.ravel(), data.ravel())[0, 1] > 0.999


def test_flags_for_usable_but_poor_inputs(tmp_path, rng):
    data = head_like(rng, (40, 40, 30))
    data[0, 0, 0] = np.nan
    affine = np.diag([1.0, 1.0, 5.0, 1.0])
    angle = np.radians(15)
    rot = np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    )
    affine[:3, :3] = rot @ affine[:3, :3]
    src = save(nb.Nifti1Image(data, affine), tmp_path / "poor.nii.gz")
    qc = conform_t1w(src, tmp_path / "out.nii.gz", ConformLimits(min_fov_mm=30))
    assert set(qc["flags"]) >= {"oblique", "low_resolution", "anisotropic",
                                "small_field_of_view", "nonfinite_values_set_to_zero"}  # fmt:skip
    assert qc["obliquity_degrees"] == pytest.approx(15, abs=0.01)
    assert qc["n_nonfinite_voxels"] == 1
    assert np.isfinite(nb.load(tmp_path / "out.nii.gz").get_fdata()).all()


def test_obliquity_of_axis_aligned_and_rotated_affines():
    assert obliquity_degrees(np.diag([2, 2, 2, 1.0])) == 0
    assert obliquity_degrees(np.diag([-1, 1, 1, 1.0])) == 0


def bad_case(rng, case):
    data = head_like(rng)
    affine = np.diag([2, 2, 2, 1.0])
    image = nb.Nifti1Image
    cases = {
        "empty": lambda: (b"", "file is empty"),
        "garbage": lambda: (gzip.compress(b"hello"), "not a readable NIfTI"),
        "truncated": lambda: (
            gzip.compress(image(data, affine).to_bytes())[:5000],
            "cannot be read",
        ),
        "twod": lambda: (image(data[:, :, :1], affine), "single slice"),
        "fourd": lambda: (image(np.stack([data, data], -1), affine), "4-D image with 2 volumes"),
        "nan": lambda: (image(np.full(SHAPE, np.nan, np.float32), affine), "NaN"),
        "constant": lambda: (image(np.full(SHAPE, 5, np.float32), affine), "constant"),
        "bigvoxel": lambda: (image(data, np.diag([20, 20, 20, 1.0])), "voxel size"),
        "smallvoxel": lambda: (image(data, np.diag([0.01, 0.01, 0.01, 1.0])), "voxel size"),
        "tinyfov": lambda: (image(data[:10, :10, :10].copy(), affine), "field of view"),
    }
    return cases[case]()


@pytest.mark.parametrize(
    "case", ["empty", "garbage", "truncated", "twod", "fourd", "nan", "constant", "bigvoxel",
             "smallvoxel", "tinyfov"],
)  # fmt:skip
def test_unusable_inputs_give_one_line_naming_the_file(tmp_path, rng, case):
    content, fragment = bad_case(rng, case)
    src = tmp_path / f"sub-x_{case}_T1w.nii.gz"
    if isinstance(content, bytes):
        src.write_bytes(content)
    else:
        save(content, src)
    out = tmp_path / "out" / "conformed.nii.gz"
    with pytest.raises(InputError) as err:
        conform_t1w(src, out)
    message = str(err.value)
    assert message.startswith(str(src)) and fragment in message and "\n" not in message
    assert not out.parent.exists() or not any(out.parent.iterdir())  # nothing half-written


def test_missing_file_and_voxel_count_limit(tmp_path, rng):
    with pytest.raises(InputError, match="does not exist"):
        conform_t1w(tmp_path / "nope.nii.gz", tmp_path / "o.nii.gz")
    src = save(nb.Nifti1Image(head_like(rng), np.diag([2, 2, 2, 1.0])), tmp_path / "big.nii.gz")
    with pytest.raises(InputError, match="voxels, more than the 1000"):
        conform_t1w(src, tmp_path / "o.nii.gz", ConformLimits(max_voxels=1000))


def test_single_volume_4d_is_accepted(tmp_path, rng):
    data = head_like(rng)
    src = save(nb.Nifti1Image(data[..., None], np.diag([2, 2, 2, 1.0])), tmp_path / "v.nii.gz")
    conform_t1w(src, tmp_path / "out.nii.gz", head_grid=False)
    assert nb.load(tmp_path / "out.nii.gz").shape == SHAPE


def _ixi_scan(ixi_dir):
    return next(ixi_dir.glob("sub-*/anat/*_T1w.nii.gz"))


def test_two_mm_scans_keep_their_grid(tmp_path, ixi_dir):
    src = _ixi_scan(ixi_dir)
    qc = conform_t1w(src, tmp_path / "out.nii.gz")
    out, canonical = nb.load(tmp_path / "out.nii.gz"), nb.as_closest_canonical(nb.load(src))
    assert qc["resampled_to_working_grid"] is False and qc["working_voxel_mm"] == 2.0
    # the same voxels on the head's grid: values untouched where the two grids overlap
    low, high = head_box(canonical.get_fdata(dtype=np.float32), (2, 2, 2))
    assert qc["cropped_to_head"] and out.shape == tuple(high - low)
    np.testing.assert_allclose(out.affine[:3, :3], canonical.affine[:3, :3])
    offset = np.linalg.inv(canonical.affine) @ out.affine[:, 3]
    np.testing.assert_allclose(offset[:3], low)
    inner = tuple(slice(max(0, -a), min(h - a, s) - a) for a, h, s in
                  zip(low, high, canonical.shape, strict=True))  # fmt:skip
    source = tuple(slice(max(0, a), min(h, s)) for a, h, s in
                   zip(low, high, canonical.shape, strict=True))  # fmt:skip
    np.testing.assert_allclose(out.get_fdata()[inner], canonical.get_fdata()[source], rtol=1e-6)


@pytest.mark.parametrize("voxels", [1.0, (1.0, 1.0, 3.0), 3.0, (0.9, 0.9, 1.2)])
def test_other_voxel_sizes_come_out_on_the_working_grid(tmp_path, ixi_dir, voxels):
    """The same brain given at another voxel size lands on the 2 mm grid, close to the 2 mm
    original: same field of view, bright-voxel intensities correlated (r > 0.95 from 1 mm;
    3 mm voxels lose detail a 2 mm grid cannot restore: r > 0.8), mean within 4 % (3 mm: 6 %)."""
    from nibabel.processing import resample_from_to

    from bids_brainage.synthetic.nuisance import resample_to_voxels

    src = _ixi_scan(ixi_dir)
    conform_t1w(src, tmp_path / "orig.nii.gz")
    original = nb.load(tmp_path / "orig.nii.gz")
    copy = save(resample_to_voxels(nb.load(src), voxels), tmp_path / "copy.nii.gz")
    qc = conform_t1w(copy, tmp_path / "out.nii.gz")
    out = nb.load(tmp_path / "out.nii.gz")
    assert qc["resampled_to_working_grid"] is True
    np.testing.assert_allclose(out.header.get_zooms()[:3], 2.0, rtol=1e-5)
    np.testing.assert_allclose(np.array(out.shape) * 2.0, np.array(original.shape) * 2.0,
                               atol=4.0)  # fmt:skip
    back = resample_from_to(out, original, order=1).get_fdata()
    bright = original.get_fdata() > np.percentile(original.get_fdata(), 60)
    r = np.corrcoef(original.get_fdata()[bright], back[bright])[0, 1]
    assert r > {1.0: 0.95, 3.0: 0.8}.get(voxels, 0.9)
    assert back[bright].mean() == pytest.approx(
        original.get_fdata()[bright].mean(), rel=0.06 if voxels == 3.0 else 0.04
    )


def ellipsoid_head(shape=(90, 100, 80), centre=(45, 50, 45), radii=(30, 36, 30), rng=None):
    """A bright ellipsoid 'head' in noisy air (2 mm voxels)."""
    rng = rng or np.random.default_rng(0)
    grid = np.indices(shape).astype(float)
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1
    data = np.abs(rng.normal(0, 3, shape)).astype(np.float32)
    data[inside] += 100
    return data, inside


def test_scans_are_cropped_to_the_head_plus_a_margin(tmp_path):
    from bids_brainage.preprocessing.conform import CROP_MARGIN_MM

    data, inside = ellipsoid_head()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    qc = conform_t1w(save(nb.Nifti1Image(data, affine), tmp_path / "in.nii.gz"),
                     tmp_path / "out.nii.gz")  # fmt:skip
    out = nb.load(tmp_path / "out.nii.gz")
    assert qc["cropped_to_head"]
    voxels = np.argwhere(inside)
    margin = int(CROP_MARGIN_MM / 2)
    # the head plus 8 voxels (16 mm) each side, zero-padded beyond the image (±1 for Otsu)
    expected = np.ptp(voxels, axis=0) + 1 + 2 * margin
    assert np.all(np.abs(np.asarray(out.shape) - expected) <= 2), (out.shape, expected)
    # every head voxel kept at its world position
    head_world = affine @ np.c_[np.argwhere(inside), np.ones(inside.sum())].T
    ijk = np.round(np.linalg.inv(out.affine) @ head_world)[:3].astype(int).T
    assert (ijk >= 0).all() and (ijk < out.shape).all()
    assert np.all(np.asarray(out.dataobj)[tuple(ijk.T)] > 50)


def test_zero_padding_or_more_air_gives_the_same_conformed_image(tmp_path):
    """The field of view a head is stored with does not change what the pipeline sees."""
    data, _ = ellipsoid_head(centre=(45, 50, 33))  # the head 6 mm above the field's lower edge
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    original = conform_t1w(save(nb.Nifti1Image(data, affine), tmp_path / "a.nii.gz"),
                           tmp_path / "a_out.nii.gz")  # fmt:skip
    padded = np.pad(data, [(0, 0), (0, 0), (15, 0)])  # 30 mm of zeros below
    shifted = affine.copy()
    shifted[2, 3] -= 30
    conform_t1w(save(nb.Nifti1Image(padded, shifted), tmp_path / "b.nii.gz"),
                tmp_path / "b_out.nii.gz")  # fmt:skip
    a, b = nb.load(tmp_path / "a_out.nii.gz"), nb.load(tmp_path / "b_out.nii.gz")
    assert original["cropped_to_head"]
    assert a.shape == b.shape
    np.testing.assert_allclose(a.affine, b.affine)
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))


def test_an_image_without_positive_values_is_not_cropped(tmp_path):
    data = -np.ones((20, 20, 20), np.float32)
    low, high = head_box(data, (2, 2, 2))
    assert list(low) == [0, 0, 0] and list(high) == [20, 20, 20]
