"""Nuisance copies used by the invariance benchmark: the same brain, stored another way."""

import nibabel as nb
import numpy as np
import pytest

from bids_brainage.synthetic.nuisance import aligned_to_template


def _ellipsoid(shape, radii, voxel_mm, centre_mm=(0.0, 0.0, 0.0)):
    """A bright ellipsoid with a dark core (so the registration has edges inside) on a RAS grid
    centred on ``centre_mm``.
    """
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = np.asarray(centre_mm) - voxel_mm * (np.asarray(shape) - 1) / 2
    world = np.einsum("ij,j...->i...", affine[:3, :3], np.indices(shape, dtype=float))
    world += affine[:3, 3, None, None, None] - np.asarray(centre_mm)[:, None, None, None]
    radius = np.sqrt(sum((w / r) ** 2 for w, r in zip(world, radii, strict=True)))
    data = np.where(radius <= 1, 100.0, 0.0) - np.where(radius <= 0.4, 60.0, 0.0)
    return nb.Nifti1Image(data.astype(np.float32), affine)


def test_aligned_to_template_scales_the_brain_to_the_template():
    """A brain 15 % smaller on a coarser, shifted grid lands on the template's grid at the
    template's size (its volume scaled by ~1/0.85³): what linearly MNI-aligned datasets hold.
    """
    template = _ellipsoid((60, 70, 60), (40, 50, 38), 2.0)
    small = _ellipsoid((40, 46, 40), (34, 42.5, 32.3), 3.0, centre_mm=(6.0, -4.0, 3.0))
    out = aligned_to_template(small, template)
    assert out.shape == template.shape
    np.testing.assert_allclose(out.affine, template.affine)
    inside = np.asarray(out.dataobj) > 50
    reference = np.asarray(template.dataobj) > 50
    assert inside.sum() == pytest.approx(reference.sum(), rel=0.08)
    dice = 2 * (inside & reference).sum() / (inside.sum() + reference.sum())
    assert dice > 0.9
