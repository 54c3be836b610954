"""Turn a template-space synthetic brain into a scanner image, with site and pose effects."""

from __future__ import annotations

from dataclasses import dataclass, field

import nibabel as nb
import numpy as np
from nibabel.orientations import axcodes2ornt, inv_ornt_aff, ornt_transform
from scipy import ndimage
from scipy.spatial.transform import Rotation


@dataclass(frozen=True)
class Site:
    """How one scanner renders a brain."""

    name: str
    voxel_mm: tuple[float, float, float] = (2.0, 2.0, 2.0)
    orientation: str = "RAS"
    gain: float = 800.0
    gamma: float = 1.0
    bias_amplitude: float = 0.15
    noise: float = 0.02
    dtype: str = "uint8"  # uint8 (scaled, like IXI), int16 or float32
    oblique_degrees: float = 0.0
    manufacturer: str = "Siemens"
    field_strength: float = 3.0


DEFAULT_SITES = (
    Site("siteA", (2.0, 2.0, 2.0), "RAS", 800.0, 1.0, 0.15, 0.02, "uint8", 0.0, "Philips", 3.0),
    Site("siteB", (2.4, 2.4, 2.4), "LPS", 1500.0, 1.25, 0.25, 0.03, "int16", 0.0, "GE", 1.5),
    Site("siteC", (1.8, 1.8, 3.0), "PSR", 300.0, 0.8, 0.10, 0.015, "float32", 8.0, "Siemens", 3.0),
)


@dataclass(frozen=True)
class Pose:
    """Head position in the scanner and the subject's own shape (size and smooth warp)."""

    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    warp_mm: float = 0.0
    warp_seed: int = 0
    extra: dict = field(default_factory=dict)


FOV_MM = np.array([192.0, 232.0, 212.0])


def scanner_affine(site: Site, shape: tuple[int, int, int]) -> tuple[np.ndarray, tuple]:
    """Voxel-to-scanner affine and stored shape: the site's axis order and voxel size, centred,
    tilted if the site acquires obliquely.
    """
    ras = np.diag([*site.voxel_mm, 1.0])
    ras[:3, 3] = -(np.array(shape) - 1) / 2 * np.array(site.voxel_mm)
    # Store the voxels in the site's axis order: permute/flip the RAS grid accordingly.
    transform = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(tuple(site.orientation)))
    stored_shape = tuple(int(shape[int(axis)]) for axis in transform[:, 0].argsort())
    affine = ras @ inv_ornt_aff(transform, shape)
    if site.oblique_degrees:
        tilt = np.eye(4)
        tilt[:3, :3] = Rotation.from_euler("x", site.oblique_degrees, degrees=True).as_matrix()
        affine = tilt @ affine
    return affine, stored_shape


def _warp(points_mm: np.ndarray, pose: Pose) -> np.ndarray:
    """A smooth random displacement (mm) evaluated at world points (N x 3)."""
    if not pose.warp_mm:
        return np.zeros_like(points_mm)
    rng = np.random.default_rng(pose.warp_seed)
    grid = rng.normal(size=(3, 6, 6, 6))
    grid = ndimage.gaussian_filter(grid, (0, 1, 1, 1))
    grid *= pose.warp_mm / max(np.abs(grid).max(), 1e-6)
    coords = (points_mm / (FOV_MM / 5) + 2.5).T  # world mm to control-point index
    return np.stack(
        [ndimage.map_coordinates(g, coords, order=3, mode="nearest") for g in grid], axis=1
    )


def acquire(
    image_template: np.ndarray,
    template_affine: np.ndarray,
    site: Site,
    pose: Pose,
    rng: np.random.Generator,
) -> nb.Nifti1Image:
    """Sample the template-space image on the site's grid, then apply the site's contrast."""
    shape = tuple(int(n) for n in np.ceil(FOV_MM / np.array(site.voxel_mm)))
    affine, stored_shape = scanner_affine(site, shape)

    ijk = np.indices(stored_shape, dtype=np.float32).reshape(3, -1)
    world = affine[:3, :3] @ ijk + affine[:3, 3:4]
    # Undo the head pose, then the subject's size and warp, to find template coordinates.
    rot = Rotation.from_euler("xyz", pose.rotation_deg, degrees=True).as_matrix()
    anatomy = rot.T @ (world - np.asarray(pose.translation_mm)[:, None])
    anatomy = anatomy / pose.scale
    anatomy = anatomy + _warp(anatomy.T, pose).T
    vox = np.linalg.inv(template_affine)
    coords = vox[:3, :3] @ anatomy + vox[:3, 3:4]
    signal = ndimage.map_coordinates(image_template, coords, order=1, mode="constant", cval=0.0)
    signal = signal.reshape(stored_shape).clip(0, None)

    # Site contrast: non-linear intensity response, smooth bias field, Rician noise.
    signal = signal**site.gamma
    centred = (world.T - world.mean(axis=1)) / (FOV_MM / 2)
    coeffs = rng.normal(size=6)
    bias = (
        coeffs[0] * centred[:, 0] + coeffs[1] * centred[:, 1] + coeffs[2] * centred[:, 2]
        + coeffs[3] * centred[:, 0] * centred[:, 1] + coeffs[4] * centred[:, 2] ** 2
        + coeffs[5] * centred[:, 1] ** 2
    )  # fmt:skip
    bias = np.exp(site.bias_amplitude * bias / max(np.abs(bias).max(), 1e-6)).reshape(stored_shape)
    signal = signal * bias
    noise = site.noise * rng.normal(size=(2, *stored_shape))
    signal = np.sqrt((signal + noise[0]) ** 2 + noise[1] ** 2) * site.gain

    img = nb.Nifti1Image(signal.astype(np.float32), affine)
    img.header.set_xyzt_units("mm", "sec")
    if site.dtype == "uint8":
        img.set_data_dtype(np.uint8)  # nibabel stores scl_slope so real values survive
    elif site.dtype == "int16":
        img = nb.Nifti1Image(np.round(signal).astype(np.int16), affine)
        img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img
