"""Harvard-Oxford labels on the template and ROI means."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bids_brainage.utils.atlas import harvard_oxford, max_probability_labels, roi_means, roi_names


def test_roi_means_by_hand():
    values = np.array([[[1.0, 2.0], [3.0, 10.0]]])
    labels = np.array([[[1, 1], [2, 0]]])
    table = roi_means(values, labels, ["a", "b", "c"])
    assert table["n_voxels"].tolist() == [2, 1, 0]
    assert table["mean"].tolist()[:2] == [1.5, 3.0] and np.isnan(table["mean"][2])


def test_max_probability_labels_use_the_threshold_and_mask():
    probs = np.zeros((3, 1, 1, 2))
    probs[0, 0, 0] = [30, 60]  # label 2
    probs[1, 0, 0] = [20, 10]  # below 25 %: none
    probs[2, 0, 0] = [90, 0]  # outside the mask
    inside = np.array([True, True, False])[:, None, None]
    assert max_probability_labels(probs, inside).ravel().tolist() == [2, 0, 0]


def test_names_are_the_69_regions_split_left_right():
    names = roi_names()
    assert len(names) == 113 and "Left Hippocampus" in names and "Right Amygdala" in names


@pytest.mark.integration
def test_atlas_lands_on_the_template(tmp_path):
    """Registered onto the offline template, the hippocampi sit where MNI coordinates put them."""
    from bids_brainage.utils.templates import resolve_template

    template = resolve_template(tmp_path, 2)
    path, names = harvard_oxford(template, tmp_path)
    image = nib.load(path)
    labels = np.asarray(image.dataobj)
    mask = np.asarray(nib.load(template.brain_mask).dataobj) > 0
    assert not (labels[~mask] > 0).any() and (labels > 0).sum() > 0.5 * mask.sum()
    for side, sign in (("Left", -1), ("Right", 1)):
        voxels = np.argwhere(labels == names.index(f"{side} Hippocampus") + 1)
        centre = image.affine @ np.r_[voxels.mean(0), 1]
        # textbook MNI centre of the hippocampus: x = ±25..30, y = -20..-25, z = -12..-15 mm
        assert 20 < sign * centre[0] < 32 and -30 < centre[1] < -15 and -20 < centre[2] < -8
        assert 500 < len(voxels) < 1500  # 4-12 ml at 2 mm
    assert harvard_oxford(template, tmp_path)[0] == path  # cached
