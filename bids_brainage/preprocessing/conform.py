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


def conform_t1w(in_file: Path, out_file: Path, limits: ConformLimits | None = None) -> dict:
    """Check ``in_file`` and write it reoriented to RAS as float32 to ``out_file``.

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
