"""Load a T1w image, check it is a usable 3-D brain MRI, and reorient it to RAS.

Pure numpy/nibabel code: the Nipype interface in ``interfaces/conform.py`` only calls it.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np

from ..utils.bids import InputError
from ..utils.io import atomic_path

# Every scan is processed on one isotropic grid, whatever voxel size it arrives with: tissue
# fractions depend on the grid they are segmented on (the same brain had a GM fraction 0.03
# higher at 1 mm than at 2 mm, moving the 2 mm-trained model by 10-19 years). 2 mm is the grid
# of the training data; the model contract records it.
WORKING_VOXEL_MM = 2.0
GRID_TOLERANCE = 0.02  # voxel sizes within 2 % of the working grid are used as they are
# Every scan is put on a grid of its head plus this margin (cropped, or padded with zeros where
# the head is closer to the edge): N4's B-spline domain and the registration then see the same
# head whatever field of view (zero padding, air, a longer scan box) it was stored with.
CROP_MARGIN_MM = 16.0


def needs_working_grid(zooms, working_voxel_mm: float = WORKING_VOXEL_MM) -> bool:
    zooms = np.asarray(zooms, float)
    return bool(np.any(np.abs(zooms / working_voxel_mm - 1) > GRID_TOLERANCE))


def centred_grid(img: nb.spatialimages.SpatialImage, voxel_mm) -> tuple[tuple, np.ndarray]:
    """(shape, affine) of a grid of ``voxel_mm`` (one value or one per axis) with the image's
    axes, covering its field of view, centred where its grid is centred.
    """
    zooms = np.linalg.norm(img.affine[:3, :3], axis=0)
    voxel_mm = np.broadcast_to(np.asarray(voxel_mm, float), (3,))
    shape = np.maximum(1, np.round(np.asarray(img.shape[:3]) * zooms / voxel_mm)).astype(int)
    affine = np.eye(4)
    affine[:3, :3] = img.affine[:3, :3] / zooms * voxel_mm
    centre = img.affine @ np.r_[(np.asarray(img.shape[:3]) - 1) / 2, 1]
    affine[:3, 3] = centre[:3] - affine[:3, :3] @ ((shape - 1) / 2)
    return tuple(int(v) for v in shape), affine


def to_working_grid(img: nb.Nifti1Image, voxel_mm: float = WORKING_VOXEL_MM) -> nb.Nifti1Image:
    """The same field of view on an isotropic ``voxel_mm`` grid with the image's own axes.

    Downsampling is anti-aliased by the Gaussian with the variance of a ``voxel_mm`` box,
    sigma = sqrt((factor² - 1) / 12) input voxels per axis, so that each output voxel averages
    what a ``voxel_mm`` acquisition would; values are then interpolated with a cubic B-spline
    (linear interpolation blurs again at every off-grid point) and clipped to the range of the
    smoothed input (no overshoot).
    """
    from nibabel.processing import resample_from_to
    from scipy import ndimage

    zooms = np.linalg.norm(img.affine[:3, :3], axis=0)
    factor = voxel_mm / zooms
    data = np.asarray(img.dataobj, dtype=np.float32)
    sigma = np.sqrt(np.clip((factor**2 - 1) / 12, 0.0, None))
    if sigma.any():
        data = ndimage.gaussian_filter(data, sigma, mode="nearest")
    shape, affine = centred_grid(img, voxel_mm)
    smoothed = nb.Nifti1Image(data, img.affine, img.header)
    low, high = float(data.min()), float(data.max())
    out = resample_from_to(smoothed, (shape, affine), order=3, mode="nearest")
    values = np.clip(np.asarray(out.dataobj, dtype=np.float32), low, high)
    result = nb.Nifti1Image(values, affine, img.header)
    result.set_qform(affine, code=1)
    result.set_sform(affine, code=1)
    return result


def head_box(data: np.ndarray, zooms) -> tuple[np.ndarray, np.ndarray]:
    """Voxel bounds [low, high) of the head (Otsu foreground, largest component) widened by
    ``CROP_MARGIN_MM`` on every side; they may reach beyond the image, where the head is close
    to its edge. The whole image when no head can be told from the background.
    """
    from .anatomical import foreground_mask

    shape = np.asarray(data.shape)
    margin = np.ceil(CROP_MARGIN_MM / np.asarray(zooms, float)).astype(int)
    # the mask's morphology sees zeros beyond the edge, as it would in a zero-padded copy
    padded = np.pad(data, [(m, m) for m in margin])
    try:
        head = foreground_mask(padded)
    except ValueError:  # no positive voxel: nothing to tell the head from
        return np.zeros(3, int), shape
    if not head.any():
        return np.zeros(3, int), shape
    inside = np.argwhere(head) - margin
    return inside.min(axis=0) - margin, inside.max(axis=0) + 1 + margin


def to_head_grid(img: nb.Nifti1Image, low, high) -> nb.Nifti1Image:
    """``img`` on the voxel bounds [low, high) of its own grid: cropped where they lie inside
    it, padded with zeros where they lie beyond (the head's grid, however it was stored).
    """
    low, high = np.asarray(low, int), np.asarray(high, int)
    data = np.asarray(img.dataobj, dtype=np.float32)
    out = np.zeros(tuple(high - low), np.float32)
    source = tuple(
        slice(max(a, 0), min(b, s)) for a, b, s in zip(low, high, data.shape, strict=True)
    )
    target = tuple(slice(src.start - a, src.stop - a) for src, a in zip(source, low, strict=True))
    out[target] = data[source]
    affine = img.affine.copy()
    affine[:3, 3] = img.affine[:3, :3] @ low + img.affine[:3, 3]
    result = nb.Nifti1Image(out, affine, img.header)
    result.set_qform(affine, code=1)
    result.set_sform(affine, code=1)
    return result


@dataclass(frozen=True)
class ConformLimits:
    """What counts as a plausible brain MRI (voxel size and field of view in mm)."""

    min_voxel_mm: float = 0.1
    max_voxel_mm: float = 8.0
    min_fov_mm: float = 60.0
    max_fov_mm: float = 600.0
    max_voxels: int = 256 * 1024 * 1024
    low_resolution_mm: float = 1.5
    anisotropy_ratio: float = 3.0
    oblique_degrees: float = 1.0
    small_fov_mm: float = 140.0


def _load(path: Path) -> nb.spatialimages.SpatialImage:
    if not path.exists():
        raise InputError(f"{path}: file does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes)")
    try:
        return nb.load(str(path))
    except (nb.filebasedimages.ImageFileError, EOFError, OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable NIfTI image ({_short(err)})") from err


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def obliquity_degrees(affine: np.ndarray) -> float:
    """Largest angle (degrees) between a voxel axis and its closest world axis."""
    axes = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    cosines = np.abs(axes).max(axis=0).clip(0.0, 1.0)
    return float(np.degrees(np.arccos(cosines)).max())


def conform_t1w(
    in_file: Path,
    out_file: Path,
    limits: ConformLimits | None = None,
    working_voxel_mm: float = WORKING_VOXEL_MM,
    head_grid: bool = True,
) -> dict:
    """Check ``in_file`` and write it reoriented to RAS as float32 to ``out_file``, on the
    isotropic working grid of ``working_voxel_mm`` when its voxels are of another size, on
    the grid of the head plus ``CROP_MARGIN_MM`` (``head_grid``; off, the stored field of view
    is kept).

    Raises
    ------
    InputError
        One line naming the file and the problem, for anything that is not a usable
        3-D brain MRI.

    Returns
    -------
    dict
        QC facts about the input (shape, voxel size, orientation, intensity range, flags).
    """
    limits = limits or ConformLimits()
    in_file, out_file = Path(in_file), Path(out_file)
    img = _load(in_file)
    shape = tuple(int(s) for s in img.shape)

    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    elif len(shape) == 4:
        raise InputError(
            f"{in_file}: 4-D image with {shape[3]} volumes; give one T1w volume per file"
        )
    if len(shape) != 3:
        raise InputError(f"{in_file}: {len(img.shape)}-D image of shape {img.shape}; need 3-D")
    if min(shape) < 2:
        raise InputError(f"{in_file}: image of shape {shape} is a single slice, not a volume")
    n_voxels = int(np.prod(shape))
    if n_voxels > limits.max_voxels:
        raise InputError(
            f"{in_file}: image of shape {shape} has {n_voxels} voxels, more than the "
            f"{limits.max_voxels} this pipeline accepts; resample it first"
        )

    affine = img.affine
    if (
        affine is None
        or not np.all(np.isfinite(affine))
        or abs(np.linalg.det(affine[:3, :3])) < 1e-9
    ):
        raise InputError(f"{in_file}: the header's affine is missing or not invertible")
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    if zooms.min() < limits.min_voxel_mm or zooms.max() > limits.max_voxel_mm:
        raise InputError(
            f"{in_file}: voxel size {_fmt(zooms)} mm is outside "
            f"{limits.min_voxel_mm}-{limits.max_voxel_mm} mm; is the header right?"
        )
    fov = zooms * np.asarray(shape)
    if fov.min() < limits.min_fov_mm or fov.max() > limits.max_fov_mm:
        raise InputError(
            f"{in_file}: field of view {_fmt(fov)} mm is outside "
            f"{limits.min_fov_mm:g}-{limits.max_fov_mm:g} mm; not a whole-brain image"
        )

    try:
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except (EOFError, OSError, ValueError, zlib.error, gzip.BadGzipFile) as err:
        raise InputError(f"{in_file}: image data cannot be read ({_short(err)})") from err

    finite = np.isfinite(data)
    n_nonfinite = int(finite.size - finite.sum())
    if n_nonfinite:
        data = np.where(finite, data, 0.0).astype(np.float32)
    if not finite.any():
        raise InputError(f"{in_file}: every voxel is NaN or infinite")
    lo, hi = float(data.min()), float(data.max())
    if hi - lo <= 0:
        raise InputError(f"{in_file}: image is constant (every voxel is {lo:g})")
    if np.count_nonzero(data != np.median(data)) < 0.001 * data.size:
        raise InputError(f"{in_file}: image is almost constant (<0.1% of voxels differ)")

    header = img.header.copy() if isinstance(img, nb.Nifti1Image) else None
    source = nb.Nifti1Image(data, affine, header)
    source.header.set_data_dtype(np.float32)
    ras = nb.as_closest_canonical(source)
    resampled = needs_working_grid(zooms, working_voxel_mm)
    if resampled:
        ras = to_working_grid(ras, working_voxel_mm)
    low, high = head_box(np.asarray(ras.dataobj), ras.header.get_zooms()[:3])
    cropped = head_grid and bool(np.any(low != 0) or np.any(high != np.asarray(ras.shape)))
    if cropped:
        ras = to_head_grid(ras, low, high)
    ras.header.set_xyzt_units("mm", "sec")
    ras.header.set_slope_inter(1.0, 0.0)
    _save_atomic(ras, out_file)

    flags = []
    oblique = obliquity_degrees(affine)
    if oblique > limits.oblique_degrees:
        flags.append("oblique")
    if zooms.max() > limits.low_resolution_mm:
        flags.append("low_resolution")
    if zooms.max() / zooms.min() > limits.anisotropy_ratio:
        flags.append("anisotropic")
    if fov.min() < limits.small_fov_mm:
        flags.append("small_field_of_view")
    if n_nonfinite:
        flags.append("nonfinite_values_set_to_zero")
    if lo < 0:
        flags.append("negative_intensities")

    return {
        "input_shape": list(shape),
        "input_dtype": str(img.get_data_dtype()),
        "input_orientation": "".join(nb.aff2axcodes(affine)),
        "scl_slope_applied": _scaled(img),
        "voxel_size_mm": [round(float(z), 4) for z in zooms],
        "field_of_view_mm": [round(float(f), 1) for f in fov],
        "obliquity_degrees": round(oblique, 3),
        "n_nonfinite_voxels": n_nonfinite,
        "intensity_min": lo,
        "intensity_max": hi,
        "working_voxel_mm": working_voxel_mm,
        "resampled_to_working_grid": resampled,
        "cropped_to_head": cropped,
        "field_of_view": "head" if head_grid else "stored",
        "output_shape": list(ras.shape),
        "output_orientation": "".join(nb.aff2axcodes(ras.affine)),
        "flags": flags,
    }


def _scaled(img) -> bool:
    slope, inter = (
        (img.dataobj.slope, img.dataobj.inter) if hasattr(img.dataobj, "slope") else (1, 0)
    )
    return bool(
        np.isfinite(slope)
        and np.isfinite(inter)
        and (float(slope) not in (0.0, 1.0) or float(inter) != 0.0)
    )


def _fmt(values) -> str:
    return " x ".join(f"{float(v):.3g}" for v in values)


def _save_atomic(img: nb.Nifti1Image, out_file: Path) -> None:
    with atomic_path(out_file) as tmp:
        img.to_filename(str(tmp))
