"""A BIDS dataset of broken and awkward inputs beside good ones, with the expected outcome of each.

``make_bad_input_kit(root)`` writes ``root/bids`` and ``root/expected.tsv``: for every
participant, whether it must be processed (``ok``, possibly with QC ``flags``) or fail, and a
fragment the one-line error must contain. The kit is not valid BIDS on purpose (empty and
truncated files), so the app must be run on it with ``--skip-bids-validation``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from bids_brainage.synthetic.acquisition import DEFAULT_SITES, Pose, Site, acquire
from bids_brainage.synthetic.anatomy import age_brain, load_template_anatomy
from bids_brainage.synthetic.dataset import _write_json, write_dataset_skeleton


def _good_image(rng: np.random.Generator, age: float = 40.0) -> nb.Nifti1Image:
    anatomy = load_template_anatomy(2.0)
    brain = age_brain(anatomy, age, rng)
    return acquire(brain.image, anatomy.affine, DEFAULT_SITES[0], Pose(), rng)


def _brain_mask(rng: np.random.Generator) -> np.ndarray:
    """The template brain mask acquired exactly as ``_good_image`` acquires the head."""
    anatomy = load_template_anatomy(2.0)
    clean = Site("mask", gain=1.0, bias_amplitude=0.0, noise=0.0, dtype="float32")
    return acquire(anatomy.brain, anatomy.affine, clean, Pose(), rng).get_fdata() > 0.5


def _with_affine(img: nb.Nifti1Image, affine: np.ndarray) -> nb.Nifti1Image:
    out = nb.Nifti1Image(np.asarray(img.dataobj), affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    return out


def _tilted(affine: np.ndarray, degrees: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    tilt = np.eye(4)
    tilt[:3, :3] = Rotation.from_euler("xz", [degrees, degrees / 2], degrees=True).as_matrix()
    return tilt @ affine


def make_bad_input_kit(root: Path, seed: int = 0) -> pd.DataFrame:
    """Write the kit; return the expected outcome per participant."""
    root = Path(root)
    bids_dir = root / "bids"
    rng = np.random.default_rng(seed)
    write_dataset_skeleton(bids_dir, "bids_brainage bad-input kit")
    good = _good_image(rng)
    data = np.asarray(good.get_fdata(), dtype=np.float32)
    affine = good.affine
    cases: list[dict] = []

    def add(label, expect, message="", flags="", image=None, raw_bytes=None, age="40"):
        anat = bids_dir / f"sub-{label}" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        target = anat / f"sub-{label}_T1w.nii.gz"
        if image is not None:
            image.to_filename(str(target))
        elif raw_bytes is not None:
            target.write_bytes(raw_bytes)
        cases.append({"participant_id": f"sub-{label}", "age": age, "expect": expect,
                      "message": message, "flags": flags})  # fmt:skip
        return target

    add("good1", "ok", image=good)
    add("good2", "ok", image=_good_image(rng, 65.0), age="65")
    add("empty", "fail", "file is empty", raw_bytes=b"")
    whole = gzip.compress(good.to_bytes())
    add("truncated", "fail", "cannot be read", raw_bytes=whole[: len(whole) // 2])
    add(
        "notnifti",
        "fail",
        "not a readable NIfTI",
        raw_bytes=gzip.compress(b"this is not an image"),
    )
    add(
        "twod",
        "fail",
        "single slice",
        image=_with_affine(
            nb.Nifti1Image(data[:, :, data.shape[2] // 2 : data.shape[2] // 2 + 1], affine), affine
        ),
    )
    add(
        "fourd",
        "fail",
        "4-D image with 3 volumes",
        image=nb.Nifti1Image(np.stack([data] * 3, axis=-1), affine),
    )
    add("onevol4d", "ok", image=nb.Nifti1Image(data[..., None], affine))
    with_nans = data.copy()
    with_nans[: data.shape[0] // 4] = np.nan
    add(
        "somenans",
        "ok",
        flags="nonfinite_values_set_to_zero",
        image=nb.Nifti1Image(with_nans, affine),
    )
    add(
        "allnans",
        "fail",
        "every voxel is NaN",
        image=nb.Nifti1Image(np.full(data.shape, np.nan, np.float32), affine),
    )
    add(
        "zeros", "fail", "constant", image=nb.Nifti1Image(np.zeros(data.shape, np.float32), affine)
    )
    absurd = affine.copy()
    absurd[:3, :3] *= 25.0
    add("hugevoxels", "fail", "voxel size", image=_with_affine(good, absurd))
    tiny = nb.Nifti1Image(data[40:50, 40:50, 40:50].copy(), affine)
    add("tinyfov", "fail", "field of view", image=tiny)
    huge_header = nb.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.diag([0.2, 0.2, 0.2, 1]))
    huge_header.header.set_data_shape((1200, 1200, 1200))
    huge_bytes = huge_header.header.binaryblock + b"\0" * 4 + b"\0" * 64
    add("hugematrix", "fail", "voxels, more than", raw_bytes=gzip.compress(huge_bytes))
    add("oblique", "ok", flags="oblique", image=_with_affine(good, _tilted(affine, 20.0)))
    head = data > np.percentile(data, 50)
    inverted = np.where(head, data.max() - data, 0).astype(np.float32)  # a T2-like contrast
    add(
        "mislabelled", "fail", "not a T1-weighted contrast", image=nb.Nifti1Image(inverted, affine)
    )
    add(
        "skullstripped",
        "ok",
        flags="skull_stripped_input",
        image=nb.Nifti1Image(np.where(_brain_mask(rng), data, 0).astype(np.float32), affine),
    )
    flipped = affine @ np.diag([-1, 1, 1, 1])
    flipped[0, 3] = affine[0, 3] + affine[0, 0] * (data.shape[0] - 1)
    add("flipped", "ok", image=_with_affine(nb.Nifti1Image(data[::-1].copy(), affine), flipped))
    target = bids_dir / "sub-brokenlink" / "anat" / "sub-brokenlink_T1w.nii.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(root / "annex" / "not-fetched.nii.gz")  # a datalad file never fetched
    cases.append({"participant_id": "sub-brokenlink", "age": "40", "expect": "fail",
                  "message": "does not exist", "flags": ""})  # fmt:skip

    # participants.tsv problems: each fails its own participant only.
    add("badage", "fail", "'forty', which is not a number", image=good, age="forty")
    add("negage", "fail", "outside 0-130", image=good, age="-3")
    add("noage", "ok", image=good, age="n/a")
    add("dupid", "fail", "appears 2 times", image=good, age="50")
    add("notintable", "ok", image=good, age=None)
    _write_json(
        bids_dir / "sub-good1" / "anat" / "sub-good1_T1w.json", {"Manufacturer": "Philips"}
    )
    (bids_dir / "sub-good2" / "anat" / "sub-good2_T1w.json").write_text("{broken json")

    rows = [{"participant_id": c["participant_id"], "age": c["age"]} for c in cases
            if c["age"] is not None]  # fmt:skip
    rows.append({"participant_id": "sub-dupid", "age": "51"})
    pd.DataFrame(rows).to_csv(bids_dir / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    expected = pd.DataFrame(cases)[["participant_id", "expect", "message", "flags"]]
    expected.to_csv(root / "expected.tsv", sep="\t", index=False)
    return expected
