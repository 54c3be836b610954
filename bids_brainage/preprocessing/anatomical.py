"""Anatomical preprocessing with ANTsPy: N4, brain extraction, registration, segmentation.

Pure functions over files (no Nipype): each reads its inputs, writes its outputs and returns
a dict of QC facts. Seed 000's pipeline (N4 → registration to MNI → skull stripping →
intensity normalisation), with the fixes DESIGN.md asks for: the head is registered to a
template *with head* (centre-of-mass initialisation) before any skull stripping, and the
registration quality is measured and flagged, never assumed.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np
from scipy import ndimage

from ..utils.templates import TISSUES, Template

# Registration presets: SyN iterations per level (shrink 4, 2, 1 of the template grid).
REGISTRATION_PRESETS = {
    "fast": {"reg_iterations": (40, 20, 0), "aff_iterations": (500, 250, 0, 0)},
    "precise": {"reg_iterations": (100, 70, 30), "aff_iterations": (2100, 1200, 200, 0)},
}
# Below this Pearson correlation between the registered brain and the template brain (inside
# the template brain mask) the registration is flagged as failed; see docs/benchmarks.md for
# the values seen on IXI scans.
MIN_REGISTRATION_CORRELATION = 0.5
SKULL_STRIPPED_MAX_HEAD_ML = 2300.0
N4_ESTIMATION_MM = 2.0
SKULL_STRIPPED_MIN_ZERO_FRACTION = 0.3
# A stripped brain resampled with a spline (linear alignment to MNI, then the working grid, then
# N4) keeps a haze of ~0.1 % of its intensity where it was zero: that counts as zero.
NEAR_ZERO_FRACTION = 0.01  # of the 99th percentile of the non-zero intensities
# On a skull-stripped input deepbet draws its edge about one voxel inside the given brain (the
# dark CSF rim looks like the zeros around it: stripped copies lost up to 3.3 % of their CSF);
# the mask is the given brain within this distance of deepbet's
STRIPPED_MASK_TOLERANCE_MM = 4.0


def _ants():
    import ants

    return ants


def set_seed(seed: int) -> None:
    """ANTs' random sampling seed (registration metric sampling)."""
    _ants().config._random_seed = int(seed)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (maximises between-class variance)."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    mean_low = np.cumsum(counts * centres) / np.maximum(weight_low, 1)
    mean_high = (np.sum(counts * centres) - np.cumsum(counts * centres)) / np.maximum(
        weight_high, 1
    )
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(np.argmax(between))])


def kmeans_1d(values: np.ndarray, k: int = 3, iterations: int = 50) -> np.ndarray:
    """Lloyd's k-means on intensities, started at evenly spaced percentiles (deterministic).

    Returns labels 0..k-1 ordered by cluster mean (for T1w: CSF, GM, WM).
    """
    values = np.asarray(values, dtype=np.float64)
    centres = np.percentile(values, np.linspace(100 / (2 * k), 100 - 100 / (2 * k), k))
    labels = np.zeros(values.size, dtype=np.int64)
    for _ in range(iterations):
        bounds = (centres[:-1] + centres[1:]) / 2  # 1-D: nearest centre = between midpoints
        labels = np.searchsorted(bounds, values)
        new = np.array([values[labels == j].mean() if np.any(labels == j) else centres[j]
                        for j in range(k)])  # fmt:skip
        if np.allclose(new, centres):
            break
        centres = np.sort(new)
    return labels


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    return labels == (int(np.argmax(sizes)) + 1)


def foreground_mask(data: np.ndarray) -> np.ndarray:
    """The head (or brain, for a skull-stripped input): Otsu, largest component, filled."""
    positive = data[data > 0]
    if positive.size == 0:
        raise ValueError("image has no positive voxels")
    mask = data > otsu_threshold(positive) * 0.5
    mask = ndimage.binary_opening(mask, iterations=1)
    mask = largest_component(mask)
    return ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=2))


def near_zero(data: np.ndarray) -> np.ndarray:
    """Voxels at most ``NEAR_ZERO_FRACTION`` of the 99th percentile of the non-zero intensities
    (a head's air holds noise well above that; a resampled stripped brain's surround does not).
    """
    nonzero = np.abs(data[data != 0])
    if nonzero.size == 0:
        return np.ones(data.shape, bool)
    return np.abs(data) <= NEAR_ZERO_FRACTION * float(np.percentile(nonzero, 99))


def is_skull_stripped(data: np.ndarray, voxel_ml: float) -> tuple[bool, dict]:
    """An input is taken as already skull-stripped when its foreground is brain-sized and the
    rest is (near) zero (a stripped brain has no scalp, skull or neck around it).
    """
    foreground_ml = float(foreground_mask(data).sum() * voxel_ml)
    zero_fraction = float(np.mean(near_zero(data)))
    stripped = (
        foreground_ml < SKULL_STRIPPED_MAX_HEAD_ML
        and zero_fraction > SKULL_STRIPPED_MIN_ZERO_FRACTION
    )
    return stripped, {
        "foreground_ml": round(foreground_ml, 1),
        "zero_fraction": round(zero_fraction, 4),
    }


def given_brain(data: np.ndarray) -> np.ndarray:
    """The non-zero support of a skull-stripped input, enclosed zeros (dark ventricles of a
    uint8 scan) filled: a mask drawn wider than it would count the zeros around it as CSF.
    """
    return ndimage.binary_fill_holes(~near_zero(data))


# N4 fits its B-spline over the whole grid it is given, so a skull-stripped input, stored on a
# grid of its brain + 16 mm, got another field than the same brain inside its head (tissue
# volumes up to 7.3 % apart on held-out IXI scans). With ``stripped_grid="head"`` its field is
# estimated on the grid a head would have: the brain's box plus the median margins (mm) from
# the brain mask to the head grid's edge over the 139 IXI-HH heads, per RAS side ((L, R),
# (P, A), (I, S)); the neck makes the inferior one long.
HEAD_GRID_MARGINS_MM = ((32.0, 30.0), (28.0, 54.0), (84.0, 26.0))
STRIPPED_GRIDS = ("brain", "head")
# Noise pulls predictions towards the training mean, on the log scale towards youth: 10 %
# Rician noise moved the shipped default by +6.1 / -7.1 y, by -0.5 / -2.5 y when the scans
# were denoised first (ANTs DenoiseImage, Rician model; docs/benchmarks.md, round 12).
DENOISE_METHODS = ("none", "rician")
# "power": before N4, the image is raised to the power that puts its GM/WM ratio at
# CONTRAST_TARGET_RATIO, so N4 (whose histogram sharpening is not blind to a change of contrast:
# docs/benchmarks.md, round 15) and every later step see one contrast whatever the scanner's
CONTRAST_METHODS = ("none", "power")
# the median over the 139 IXI heads' first N4 images (5th-95th percentile 0.64-0.77): a power
# near 1 for scans like the training scans
CONTRAST_TARGET_RATIO = 0.72
CONTRAST_POWER_LIMITS = (0.5, 2.0)  # a ratio near 1 (no contrast) must not blow the image up
# "brain": after brain extraction, N4 again on the conformed image inside the brain mask, its
# field estimated on the head-sized grid around that brain (HEAD_GRID_MARGINS_MM). A head and
# the same brain given skull-stripped then reach registration and Atropos through one path;
# "head": the first N4 (inside the head mask) is what they read (bundles trained before it).
BIAS_CORRECTIONS = ("head", "brain")


def denoise(ants, image, mask) -> tuple[object, dict]:
    """ANTs' non-local means (Rician model) inside ``mask``, and the noise it removed: the SD
    of the removed part as a percentage of the 99th intensity percentile inside the mask, the
    scan's noise as stored (the denoised image's CNR no longer shows it).
    """
    denoised = ants.denoise_image(image, mask=mask, noise_model="Rician")
    inside = mask.numpy() > 0
    data = image.numpy()
    removed = data[inside] - denoised.numpy()[inside]
    scale = max(float(np.percentile(data[inside], 99)), 1e-6)
    return denoised, {
        "denoise": "rician",
        "removed_noise_pct": round(100 * float(removed.std()) / scale, 3),
    }


def gm_wm_ratio(data: np.ndarray, inside: np.ndarray) -> float:
    """GM over WM median intensity inside the brain, the classes from a 3-means of the log
    intensities. A power law I**k scales the logs, which leaves the 3-means classes as they were:
    the ratio becomes ratio**k exactly.
    """
    values = data[inside & (data > 0)].astype(np.float64)
    if values.size < 100:
        raise ValueError(f"only {values.size} positive voxels inside the brain mask")
    labels = kmeans_1d(np.log(values), 3)
    gm, wm = (np.median(values[labels == j]) for j in (1, 2))
    return float(gm / wm)


def contrast_power(data: np.ndarray, inside: np.ndarray,
                   target: float = CONTRAST_TARGET_RATIO) -> tuple[float, float]:  # fmt:skip
    """The power that takes the image's GM/WM ratio (``gm_wm_ratio``) to ``target``, within
    ``CONTRAST_POWER_LIMITS``, and that ratio.
    """
    ratio = gm_wm_ratio(data, inside)
    if not 0 < ratio < 1:
        return 1.0, ratio  # equal class medians: no contrast to set (log(1) = 0)
    low, high = CONTRAST_POWER_LIMITS
    return float(np.clip(np.log(target) / np.log(ratio), low, high)), ratio


def standardise_contrast(
    in_file: Path, n4_file: Path, mask_file: Path, out_file: Path, stripped_grid: str = "brain",
    denoising: str = "none",
) -> dict:  # fmt:skip
    """N4 again on the conformed image raised to ``contrast_power`` (measured on the first N4
    image inside the brain mask): the N4 QC plus the power and the ratio it corrected.
    """
    inside = np.asarray(nb.load(mask_file).dataobj) > 0
    power, ratio = contrast_power(np.asarray(nb.load(n4_file).dataobj, np.float64), inside)
    qc = n4_correct(in_file, out_file, stripped_grid, denoising, power=power)
    return {**qc, "contrast": "power", "contrast_power": round(power, 4),
            "gm_wm_ratio_before": round(ratio, 4)}  # fmt:skip


def n4_in_brain(in_file: Path, mask_file: Path, out_file: Path, denoising: str = "none") -> dict:
    """N4 of the conformed image inside the brain mask (zero outside it), its field estimated on
    the head-sized grid around the brain whatever grid the image is stored on: the same result
    for a head and for its brain given skull-stripped (``BIAS_CORRECTIONS``).
    """
    image = nb.load(in_file)
    inside = np.asarray(nb.load(mask_file).dataobj) > 0
    if inside.shape != image.shape[:3] or not inside.any():
        raise ValueError(f"{mask_file}: brain mask empty or not on the grid of {in_file}")
    brain = np.where(inside, np.clip(np.asarray(image.dataobj, np.float32), 0, None), 0)
    with tempfile.TemporaryDirectory() as scratch:
        masked = Path(scratch) / "brain.nii.gz"
        nb.save(nb.Nifti1Image(brain.astype(np.float32), image.affine), masked)
        qc = n4_correct(masked, out_file, "head", denoising, head_sized=True)
    return {**qc, "bias_correction": "brain"}


def head_sized_bounds(inside: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Voxel bounds [low, high) of ``inside``'s box widened by ``HEAD_GRID_MARGINS_MM`` on a
    RAS-ordered grid; they may reach beyond it.
    """
    where = np.argwhere(inside)
    margins = np.round(np.asarray(HEAD_GRID_MARGINS_MM) / np.asarray(spacing, float)[:, None])
    return (where.min(axis=0) - margins[:, 0].astype(int),
            where.max(axis=0) + 1 + margins[:, 1].astype(int))  # fmt:skip


def _on_bounds(ants, image, array: np.ndarray, low, high):
    """``array`` (on ``image``'s grid) cut or zero-padded to the voxel bounds [low, high), at
    the same place in space.
    """
    out = np.zeros(tuple(high - low), np.float32)
    source = tuple(slice(max(a, 0), min(b, n))
                   for a, b, n in zip(low, high, array.shape, strict=True))  # fmt:skip
    target = tuple(slice(s.start - a, s.stop - a) for s, a in zip(source, low, strict=True))
    out[target] = array[source]
    shift = np.asarray(image.direction) @ (low * np.asarray(image.spacing))
    origin = np.asarray(image.origin) + shift
    return ants.from_numpy(out, origin=tuple(origin), spacing=image.spacing,
                           direction=image.direction)  # fmt:skip


def n4_correct(in_file: Path, out_file: Path, stripped_grid: str = "brain",
               denoising: str = "none", power: float = 1.0,
               head_sized: bool | None = None) -> dict:  # fmt:skip
    """N4 bias-field correction inside the head mask; a skull-stripped input's field is
    estimated on its own grid (``stripped_grid="brain"``, what bundles trained before the
    choice expect) or on the grid a head would have (``"head"``, ``HEAD_GRID_MARGINS_MM``).
    With ``denoising="rician"`` the image is denoised first (``denoise``), as ANTs' pipelines
    order the two.

    The field is smooth, so it is estimated on a copy of at most ``N4_ESTIMATION_MM`` voxels
    (shrink 2 on top: 4 mm) and divided out of the full-resolution image: seconds, not minutes,
    for a 1 mm head. ``power``: the image is first raised to it (``standardise_contrast``).
    ``head_sized``: estimate on the head-sized grid (True) or the stored one (False) whether or
    not the input looks skull-stripped; None decides by ``stripped_grid`` and that test.
    """
    if stripped_grid not in STRIPPED_GRIDS:
        raise ValueError(f"stripped_grid must be one of {STRIPPED_GRIDS}, not {stripped_grid!r}")
    if denoising not in DENOISE_METHODS:
        raise ValueError(f"denoising must be one of {DENOISE_METHODS}, not {denoising!r}")
    ants = _ants()
    image = ants.image_read(str(in_file))
    if power != 1.0:
        image = image.new_image_like(np.clip(image.numpy(), 0, None) ** power)
    data = image.numpy()
    mask = image.new_image_like(foreground_mask(data).astype(np.float32))  # the head
    noise = {"denoise": "none"}
    if denoising == "rician":
        image, noise = denoise(ants, image, mask)
    shift = float(data.min())
    positive = image - shift + 1.0 if shift <= 0 else image  # N4 works on a log scale
    estimate_on, estimate_mask = positive, mask
    if head_sized is None:
        head_sized = stripped_grid == "head" and is_skull_stripped(
            data, float(np.prod(image.spacing)) / 1e3)[0]
    if head_sized:
        low, high = head_sized_bounds(mask.numpy() > 0, image.spacing)
        estimate_on = _on_bounds(ants, image, positive.numpy(), low, high)
        estimate_mask = _on_bounds(ants, image, mask.numpy(), low, high)
    if min(image.spacing) < N4_ESTIMATION_MM:
        spacing = tuple(max(s, N4_ESTIMATION_MM) for s in image.spacing)
        estimate_on = ants.resample_image(estimate_on, spacing, use_voxels=False, interp_type=0)
        estimate_mask = ants.resample_image_to_target(
            mask, estimate_on, interp_type="nearestNeighbor"
        )
    field = ants.n4_bias_field_correction(
        estimate_on, mask=estimate_mask, shrink_factor=4,
        convergence={"iters": [50, 50, 30], "tol": 1e-7}, return_bias_field=True,
    )  # fmt:skip
    if estimate_on is not positive:
        field = ants.resample_image_to_target(field, positive, interp_type="linear")
    field_data = field.numpy()
    # Voxels beyond the coarse grid's last centre come back as 0: give them the median field.
    valid = field_data > 1e-3
    field_data = np.where(valid, field_data, np.median(field_data[valid]))
    corrected = positive.numpy() / field_data
    corrected[data == 0] = 0  # background stays exactly 0 (how skull-stripped inputs are seen)
    corrected = positive.new_image_like(corrected.astype(np.float32))
    ants.image_write(corrected, str(out_file))
    inside = field_data[mask.numpy() > 0]
    return {"bias_field_range": [round(float(np.percentile(inside, 1)), 4),
                                 round(float(np.percentile(inside, 99)), 4)],
            "stripped_grid": stripped_grid, **noise}  # fmt:skip


@dataclass
class Transforms:
    """ANTs transform files from native T1w to the template, and back."""

    forward: list[str]  # template <- native, as ants.apply_transforms(fixed=template) wants
    inverse: list[str]
    invert_flags: list[bool]


def _scratch(work: Path, name: str) -> str:
    """A fresh folder for one registration (antspyx finds its outputs by globbing a prefix)."""
    folder = Path(work) / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return str(folder / "out_")


def _copy_transforms(files: list[str], folder: Path, stem: str) -> list[str]:
    out = []
    for i, name in enumerate(files):
        suffix = ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix
        target = folder / f"{stem}{i}{suffix}"
        shutil.copyfile(name, target)
        out.append(str(target))
    return out


BRAIN_EXTRACTION_METHODS = ("template", "deepbet")
_DEEPBET = {}  # one loaded network per process


def deepbet_mask(n4_file: Path, threads: int = 1) -> np.ndarray:
    """Deepbet's brain mask (Fisch et al. 2024; its two TorchScript networks ship inside the
    deepbet wheel, so nothing is downloaded), in the voxel order of ``n4_file``.
    """
    import nibabel as nib
    import torch

    torch.set_num_threads(max(1, threads))
    if "model" not in _DEEPBET:
        from deepbet import BrainExtraction  # imports no GUI (customtkinter is deepbet.ui only)

        _DEEPBET["model"] = BrainExtraction(no_gpu=True)
    _, mask, _ = _DEEPBET["model"].run(nib.load(str(n4_file)))
    return np.asarray(mask.dataobj) > 0


def stripped_brain_mask(network_mask: np.ndarray, data: np.ndarray, spacing) -> np.ndarray:
    """The brain mask of a skull-stripped input: the given brain (``given_brain``) where it lies
    within ``STRIPPED_MASK_TOLERANCE_MM`` of the network's mask. Its rim of dark CSF stays, as
    in the same brain given with its head; tissue a loose strip left farther out is cut.
    """
    distance = ndimage.distance_transform_edt(~network_mask.astype(bool), sampling=spacing)
    return given_brain(data) & (distance <= STRIPPED_MASK_TOLERANCE_MM)


def brain_extract(
    n4_file: Path, template: Template, out_mask: Path, work: Path, method: str = "template",
    threads: int = 1,
) -> tuple[dict, list[str]]:  # fmt:skip
    """Brain mask in native space; returns QC and the head-to-head affine (native→template).

    Registers the *head* to the template head (centre-of-mass start). ``template`` method:
    warps the template brain mask back, then refines it with a 3-class k-means inside a 4 mm
    band: voxels classified as GM/WM are added, CSF-class voxels outside the warped template
    mask are removed; inputs that are already skull-stripped are detected and only cleaned.
    ``deepbet`` method: the mask of the deepbet network (on a stripped brain: the given brain
    within 4 mm of it, ``stripped_brain_mask``); the
    registration then starts from the brains' centres of mass, and the head affine serves the
    QC only (the Dice with the warped template mask).
    """
    if method not in BRAIN_EXTRACTION_METHODS:
        raise ValueError(f"brain extraction must be one of {BRAIN_EXTRACTION_METHODS}")
    ants = _ants()
    image = ants.image_read(str(n4_file))
    voxel_ml = float(np.prod(image.spacing)) / 1000.0
    data = image.numpy()
    stripped, facts = is_skull_stripped(data, voxel_ml)
    fixed = ants.image_read(str(template.t1w))
    template_mask = ants.image_read(str(template.brain_mask))
    if stripped:
        fixed = fixed * template_mask  # brain to brain
    affine = ants.registration(
        fixed, image, type_of_transform="Affine", outprefix=_scratch(work, "head_registration"),
        aff_iterations=(1000, 500, 250, 0),
    )  # fmt:skip
    affine_files = _copy_transforms(affine["fwdtransforms"], work, "head_to_template_")
    warped_mask = ants.apply_transforms(
        image, template_mask, affine_files, whichtoinvert=[True], interpolator="linear"
    ).numpy()
    prior = warped_mask > 0.5
    if method == "deepbet":
        mask = deepbet_mask(n4_file, threads)
        if stripped:  # the given brain is all there is: zeros around it are not CSF
            mask = stripped_brain_mask(mask, data, image.spacing)
    elif stripped:
        mask = foreground_mask(data)
    else:
        band = ndimage.binary_dilation(prior, iterations=max(1, round(4 / min(image.spacing))))
        kmeans = np.zeros(data.shape, np.uint8)
        kmeans[band] = kmeans_1d(data[band], 3) + 1  # classes by intensity: CSF < GM < WM
        tissue = np.isin(kmeans, (2, 3))
        mask = (prior | tissue) & band & ~((kmeans == 1) & ~prior)
        mask = largest_component(ndimage.binary_opening(mask, iterations=1))
        mask = ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=2))
    ants.image_write(image.new_image_like(mask.astype(np.float32)), str(out_mask))
    overlap = float(2 * (mask & prior).sum() / max(mask.sum() + prior.sum(), 1))
    qc = {
        "method": method,
        "skull_stripped_input": bool(stripped),
        **facts,
        "brain_mask_ml": round(float(mask.sum() * voxel_ml), 1),
        "dice_with_template_mask": round(overlap, 4),
        "touches_field_of_view_edge": bool(
            mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
            or mask[:, :, 0].any() or mask[:, :, -1].any()
        ),
    }  # fmt:skip
    return qc, affine_files


def register_to_template(
    n4_file: Path, mask_file: Path, template: Template, initial: list[str] | None, preset: str,
    work: Path, intensity: str = "linear",
) -> tuple[Transforms, dict]:  # fmt:skip
    """Brain-to-brain affine + SyN registration to the template, started from ``initial`` (the
    head affine) or, when None, by aligning the two brains' centres of mass: a start that the
    field of view (neck, zero padding, a cut-off chin) cannot move. With ``intensity="log"``
    both brains are registered as ``log_intensities``: Mattes mutual information bins the
    intensity range evenly, so a power-law change of contrast, a scaling in log space, then
    leaves every bin's content, the metric and the warp as they were.
    """
    ants = _ants()
    if preset not in REGISTRATION_PRESETS:
        raise ValueError(f"unknown registration preset {preset!r}; use fast or precise")
    _check_intensity(intensity)
    image = ants.image_read(str(n4_file))
    mask = ants.image_read(str(mask_file))
    fixed_mask = ants.image_read(str(template.brain_mask))
    fixed = ants.image_read(str(template.t1w)) * fixed_mask
    moving = image * mask
    if intensity == "log":
        fixed_in, moving_in = (
            brain.new_image_like(log_intensities(brain.numpy(), inside.numpy() > 0.5))
            * inside for brain, inside in ((fixed, fixed_mask), (moving, mask))
        )  # fmt:skip
    else:
        fixed_in, moving_in = fixed, moving
    result = ants.registration(
        fixed_in, moving_in, type_of_transform="SyN", initial_transform=initial,
        outprefix=_scratch(work, "template_registration"), **REGISTRATION_PRESETS[preset],
    )  # fmt:skip
    forward = _copy_transforms(result["fwdtransforms"], work, "native_to_template_")
    inverse = _copy_transforms(result["invtransforms"], work, "template_to_native_")
    # the QC correlation is on the intensities whatever was registered, comparable across runs
    warped = (result["warpedmovout"] if moving_in is moving else ants.apply_transforms(
        fixed, moving, forward, interpolator="linear")).numpy()  # fmt:skip
    inside = fixed_mask.numpy() > 0.5
    correlation = float(np.corrcoef(warped[inside], fixed.numpy()[inside])[0, 1])
    qc = {
        "intensity_scale": intensity,
        "registration_preset": preset,
        "registration_correlation": round(correlation, 4),
        "registration_failed": bool(correlation < MIN_REGISTRATION_CORRELATION),
    }
    flags = [True if "Affine" in f or f.endswith(".mat") else False for f in inverse]
    return Transforms(forward=forward, inverse=inverse, invert_flags=flags), qc


INTENSITY_SCALES = ("linear", "log")
# The --intensity-scale settings: the scale of (registration, segmentation). "log-registration"
# keeps the warp blind to a power-law change of contrast and Atropos on the intensities, where
# the log scale is noise-prone. Denoised, on 3 IXI scans: gamma 0.8 moved WM by up to +5.4 % on
# the intensities, +3.8 % with the log warp; 10 % noise moved CSF by up to 4.1 % with Atropos on
# the log, 2.9 % on the intensities (benchmarks/intensity_scales.py, docs/benchmarks.md).
INTENSITY_SETTINGS = {"linear": ("linear", "linear"), "log": ("log", "log"),
                      "log-registration": ("log", "linear")}  # fmt:skip


def intensity_steps(setting: str) -> tuple[str, str]:
    """The (registration, segmentation) scales of an --intensity-scale ``setting``."""
    if setting not in INTENSITY_SETTINGS:
        raise ValueError(f"intensity scale must be one of {tuple(INTENSITY_SETTINGS)}, "
                         f"not {setting!r}")  # fmt:skip
    return INTENSITY_SETTINGS[setting]


def intensity_setting(registration: str, segmentation: str) -> str:
    """The --intensity-scale setting whose steps are these scales (QC records each step's)."""
    for setting, steps in INTENSITY_SETTINGS.items():
        if steps == (registration, segmentation):
            return setting
    raise ValueError(f"no intensity scale registers on {registration!r} and segments on "
                     f"{segmentation!r}")  # fmt:skip


# In-mask percentile below which log intensities are clipped (a percentile of I**g is the same
# percentile of I to the power g, so the clip keeps the invariance).
LOG_FLOOR_PERCENTILE = 0.5


def log_intensities(data: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """log(I / floor), the floor being the intensities' ``LOG_FLOOR_PERCENTILE`` inside the
    mask: 0 at and below it, positive above.

    A contrast change I -> c * I**g becomes g * log(I / floor): a scaling. A Gaussian mixture
    fitted by EM (Atropos) gives the same posteriors for affinely mapped data, and mutual
    information with evenly spaced bins the same value, so registration and segmentation on
    this scale are blind to scaling and to a power-law change of contrast (on the intensities
    themselves gamma 0.8 moved WM by +3.5 to +4.5 %, docs/benchmarks.md).
    """
    values = data[inside]
    values = values[values > 0]
    floor = float(np.percentile(values, LOG_FLOOR_PERCENTILE)) if values.size else 1.0
    return np.log(np.maximum(data, floor) / floor).astype(np.float32)


def _check_intensity(intensity: str) -> None:
    if intensity not in INTENSITY_SCALES:
        raise ValueError(f"intensity must be one of {INTENSITY_SCALES}, not {intensity!r}")


def segment(
    n4_file: Path,
    mask_file: Path,
    template: Template,
    transforms: Transforms,
    intensity: str = "linear",
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """CSF/GM/WM probabilities with Atropos, template priors warped to native space; on the
    intensities themselves or (``intensity="log"``) on their log, see ``log_intensities``.
    """
    ants = _ants()
    image = ants.image_read(str(n4_file))
    mask = ants.image_read(str(mask_file))
    priors = [
        ants.apply_transforms(
            image,
            ants.image_read(str(template.probseg[t])),
            transforms.inverse,
            whichtoinvert=transforms.invert_flags,
            interpolator="linear",
        )  # fmt:skip
        for t in TISSUES
    ]
    return atropos(image, mask, priors, intensity)


def atropos(image, mask, priors: list, intensity: str = "linear"):
    """Atropos three-class posteriors (CSF, GM, WM: ``priors`` in that order) of the ANTs
    ``image`` inside ``mask``, and the labels.
    """
    _check_intensity(intensity)
    ants = _ants()
    if intensity == "log":
        image = image.new_image_like(log_intensities(image.numpy(), mask.numpy() > 0))
    # ANTsPy's atropos writes the priors to temporary files it never removes: keep them in a
    # folder of our own that goes when the step ends (nothing left in the system's /tmp)
    with tempfile.TemporaryDirectory(prefix="bids_brainage_atropos_") as scratch:
        previous, tempfile.tempdir = tempfile.tempdir, scratch
        try:
            # r=0: Atropos seeds its generator with a constant, so reruns are identical
            result = ants.atropos(
                a=image, x=mask, i=priors, m="[0.1,1x1x1]", c="[3,0]", priorweight=0.25, r=0
            )
            probabilities = {
                t: p.numpy().astype(np.float32)
                for t, p in zip(TISSUES, result["probabilityimages"], strict=True)
            }
            labels = result["segmentation"].numpy().astype(np.uint8)
        finally:
            tempfile.tempdir = previous
    return probabilities, labels
