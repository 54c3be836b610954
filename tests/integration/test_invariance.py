"""Same brain, same age: the CI subset of benchmarks/invariance.py on real IXI scans.

Copies of three real scans that differ only in voxel size (1 mm), storage orientation, data
type or a skull strip must give the default model's predicted age within 4 years (median within
1.5) and GM, WM and CSF volumes within 3 % of the original's (issue 18's targets). A change of
contrast is not in this subset: on its three scans gamma 0.8 moves the default's age by 0.98 to
1.77 y (median 1.64; over 13 scans 1.13, docs/benchmarks.md, round 19).
"""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from bids_brainage.cli.run import main
from bids_brainage.models.bundle import load_bundle, resolve_bundle
from bids_brainage.synthetic.nuisance import (
    TRANSFORMS,
    aligned_to_template,
    skull_strip,
    template_brain,
)

pytestmark = pytest.mark.integration
PAIR = {"IXI096": 27.0, "IXI443": 69.0}  # ages rounded; only differences are compared
# and the training scan at the default's median training age (45.62 y): with three scans the
# median of the changes is a median, not the mean of two
SUBJECTS = {**PAIR, "IXI354": 46.0}
CI_TRANSFORMS = ("up1mm", "ras", "float32")
MAX_DELTA_AGE, MEDIAN_DELTA_AGE, MAX_VOLUME_PCT = 4.0, 1.5, 3.0
VOLUME_PCT = dict.fromkeys(("gm", "wm", "csf"), MAX_VOLUME_PCT)


def _copies(ixi_dir, root, transforms, *options, make=None, subjects=SUBJECTS):
    """The participant level on copies of the scans (and on the originals unless ``make``
    makes the copies: ``make(subject, image)`` → {name: copy})."""
    bids = root / "bids"
    rows = []
    for subject, age in subjects.items():
        img = nb.load(ixi_dir / f"sub-{subject}" / "anat" / f"sub-{subject}_T1w.nii.gz")
        copies = make(subject, img) if make else {
            name: img if name == "orig" else TRANSFORMS[name][1](img)
            for name in ("orig", *transforms)}  # fmt:skip
        for name, copy in copies.items():
            label = f"{subject.lower()}{name}"
            anat = bids / f"sub-{label}" / "anat"
            anat.mkdir(parents=True)
            copy.to_filename(anat / f"sub-{label}_T1w.nii.gz")
            rows.append({"participant_id": f"sub-{label}", "age": age})
    pd.DataFrame(rows).to_csv(bids / "participants.tsv", sep="\t", index=False)
    (bids / "dataset_description.json").write_text(json.dumps(
        {"Name": "IXI nuisance copies", "BIDSVersion": "1.10.0"}))  # fmt:skip
    code = main([str(bids), str(root / "out"), "participant", "-w", str(root / "work"),
                 "--model", "default", "--nprocs", "2", "--skip-bids-validation",
                 *options])  # fmt:skip
    return code, root / "out"


@pytest.fixture(scope="module")
def copies_run(ixi_dir, tmp_path_factory):
    return _copies(ixi_dir, tmp_path_factory.mktemp("invariance"), CI_TRANSFORMS)


def test_zero_padding_changes_nothing_on_the_head_grid(ixi_dir, tmp_path):
    """With --field-of-view head, 30 mm of zeros below the neck give the same scan: same
    predicted age, same volumes (the stored field of view moved it 5.1 y, docs/benchmarks.md).
    """
    code, out = _copies(ixi_dir, tmp_path, ("neck30",), "--field-of-view", "head", subjects=PAIR)
    assert code == 0
    for subject in PAIR:
        base_age, base_volumes = _measure(out, f"{subject.lower()}orig")
        age, volumes = _measure(out, f"{subject.lower()}neck30")
        assert age == pytest.approx(base_age, abs=0.01)
        assert volumes == pytest.approx(base_volumes, rel=1e-4)
        table = pd.read_csv(out / f"sub-{subject.lower()}neck30" / "anat" /
                            f"sub-{subject.lower()}neck30_brainage.tsv", sep="\t")  # fmt:skip
        flagged = "field_of_view_unlike_training" in str(table["flags"].iloc[0])
        assert flagged == (load_bundle(resolve_bundle("default")).field_of_view != "head")


def _measure(out, label):
    anat = out / f"sub-{label}" / "anat"
    age = pd.read_csv(anat / f"sub-{label}_brainage.tsv", sep="\t")["predicted_age"].iloc[0]
    volumes = pd.read_csv(anat / f"sub-{label}_desc-volumes_features.tsv", sep="\t").iloc[0]
    return float(age), {t: float(volumes[f"{t}_ml"]) for t in ("gm", "wm", "csf")}


def _deltas(out, transform, copies_out=None, volume_pct=VOLUME_PCT):
    """|Δ predicted age| per subject between its original (in ``out``) and its copy (in
    ``copies_out``, default ``out``); asserts each tissue volume named in ``volume_pct`` stays
    within that many percent (none for a rescaled copy)."""
    deltas = []
    for subject in SUBJECTS:
        base_age, base_volumes = _measure(out, f"{subject.lower()}orig")
        age, volumes = _measure(copies_out or out, f"{subject.lower()}{transform}")
        deltas.append(abs(age - base_age))
        for tissue, bound in volume_pct.items():
            change = 100 * abs(volumes[tissue] - base_volumes[tissue]) / base_volumes[tissue]
            assert change <= bound, (subject, transform, tissue, change)
    return deltas


@pytest.mark.parametrize("transform", CI_TRANSFORMS)
def test_nuisance_copies_keep_age_and_volumes(copies_run, transform):
    code, out = copies_run
    assert code == 0
    deltas = _deltas(out, transform)
    assert max(deltas) <= MAX_DELTA_AGE, deltas
    assert np.median(deltas) <= MEDIAN_DELTA_AGE, deltas


def test_skull_stripped_brains_keep_their_age(copies_run, ixi_dir, tmp_path):
    """Skull-stripped with the app's own mask, as given (GM, WM and CSF within 3 %: the mask keeps
    the given brain's rim of CSF, which deepbet alone drew 3.3 % short) and affinely aligned to
    the MNI brain at 1 mm, as shared datasets often hold brains (held-out ones came out 30 y too
    young): the predicted age stays within the targets. The
    aligned copies' volumes are not compared: the alignment rescales the brain.
    """
    code, out = copies_run
    assert code == 0
    template = template_brain()

    def stripped(subject, img):
        label = f"{subject.lower()}orig"
        mask = nb.load(out / f"sub-{label}" / "anat" / f"sub-{label}_desc-brain_mask.nii.gz")
        brain = skull_strip(img, mask)
        return {"skullstrip": brain, "mnistrip": aligned_to_template(brain, template)}

    code, copies_out = _copies(ixi_dir, tmp_path, (), make=stripped)
    assert code == 0
    for transform, volume_pct in (("skullstrip", VOLUME_PCT), ("mnistrip", {})):
        deltas = _deltas(out, transform, copies_out, volume_pct)
        assert max(deltas) <= MAX_DELTA_AGE, (transform, deltas)
        assert np.median(deltas) <= MEDIAN_DELTA_AGE, (transform, deltas)


def test_volumes_under_a_change_of_contrast_on_the_log_scale(ixi_dir, tmp_path):
    """Gamma 0.8 and a ±20 % bias field: registered and segmented on the log scale
    (--intensity-scale log), GM, WM and CSF stay within 3 % (on the intensities themselves WM
    moved by up to +4.7 %, docs/benchmarks.md).
    """
    code, out = _copies(ixi_dir, tmp_path, ("gammabias",), "--model", "none",
                        "--intensity-scale", "log", "--denoising", "none",
                        "--bias-correction", "head", subjects=PAIR)  # fmt:skip
    assert code == 0
    for subject in PAIR:
        qc = json.loads((out / f"sub-{subject.lower()}orig" / "anat" /
                         f"sub-{subject.lower()}orig_qc.json").read_text())  # fmt:skip
        assert qc["segmentation"]["intensity_scale"] == "log"
        assert qc["registration"]["intensity_scale"] == "log"
        base = _volumes(out, f"{subject.lower()}orig")
        changed = _volumes(out, f"{subject.lower()}gammabias")
        for tissue, value in changed.items():
            change = 100 * abs(value - base[tissue]) / base[tissue]
            assert change <= MAX_VOLUME_PCT, (subject, tissue, change)


def _volumes(out, label):
    anat = out / f"sub-{label}" / "anat"
    volumes = pd.read_csv(anat / f"sub-{label}_desc-volumes_features.tsv", sep="\t").iloc[0]
    return {t: float(volumes[f"{t}_ml"]) for t in ("gm", "wm", "csf")}
