"""The log intensity scale: a power-law change of contrast leaves the tissue classes alone."""

import numpy as np
import pytest
from scipy import ndimage

from bids_brainage.preprocessing.anatomical import (
    INTENSITY_SETTINGS,
    atropos,
    intensity_setting,
    intensity_steps,
    log_intensities,
)
from bids_brainage.preprocessing.qc import preprocessing_choices


def test_log_intensities_turn_a_power_law_into_a_scaling(rng):
    data = rng.uniform(5.0, 200.0, (12, 12, 12))
    data[:2] = 0.0  # background
    inside = data > 0
    scaled = log_intensities(data, inside)
    assert scaled.min() == 0.0  # at and below the floor (the 0.5th percentile inside)
    assert np.mean(scaled[inside] == 0.0) == pytest.approx(0.005, abs=0.002)
    changed = 3.0 * data**0.8
    assert np.allclose(log_intensities(changed, inside), 0.8 * scaled, atol=1e-4)


def _phantom(rng):
    """A 'brain' of 40³ voxels: WM core, GM shell, CSF rim, each Gaussian; priors are the true
    classes blurred, as warped template priors are."""
    grid = np.linalg.norm(np.indices((40, 40, 40)).transpose(1, 2, 3, 0) - 19.5, axis=-1)
    classes = np.select([grid < 9, grid < 14, grid < 17], [3, 2, 1], 0)
    means = {1: 20.0, 2: 70.0, 3: 100.0}  # T1w-like: GM and WM overlap
    data = np.zeros(classes.shape)
    for label, mean in means.items():
        data[classes == label] = rng.normal(mean, 10.0, (classes == label).sum())
    data = ndimage.gaussian_filter(data, 1.0)  # partial volume at the boundaries
    priors = [ndimage.gaussian_filter((classes == c).astype(float), 2.0) for c in (1, 2, 3)]
    return np.clip(data, 1.0, None), classes > 0, priors


@pytest.mark.parametrize("intensity", ["linear", "log"])
def test_atropos_volumes_under_gamma(intensity):
    import ants

    data, inside, priors = _phantom(np.random.default_rng(0))
    top = data.max()
    volumes = []
    for image in (data, top * (data / top) ** 0.8):
        result, _ = atropos(ants.from_numpy(image.astype(np.float32)),
                            ants.from_numpy(inside.astype(np.float32)),
                            [ants.from_numpy(p.astype(np.float32)) for p in priors],
                            intensity)  # fmt:skip
        volumes.append(np.array([result[t].sum() for t in ("CSF", "GM", "WM")]))
    change = 100 * np.abs(volumes[1] / volumes[0] - 1)
    if intensity == "log":  # EM is affine-equivariant: the same posteriors
        assert change.max() < 0.05, change
    else:  # the contrast change moves the classes (1.1-1.3 % here): what log is for
        assert change.max() > 0.8, change


def test_atropos_refuses_an_unknown_intensity():
    with pytest.raises(ValueError, match="intensity must be one of"):
        atropos(None, None, [], "sqrt")


def test_each_setting_names_its_two_steps_and_is_found_from_them():
    for setting in INTENSITY_SETTINGS:
        assert intensity_setting(*intensity_steps(setting)) == setting
    assert intensity_steps("log-registration") == ("log", "linear")
    with pytest.raises(ValueError, match="intensity scale must be one of"):
        intensity_steps("sqrt")
    with pytest.raises(ValueError, match="registers on 'linear' and segments on 'log'"):
        intensity_setting("linear", "log")


def test_the_qc_of_both_steps_gives_the_setting():
    both = {"registration": {"intensity_scale": "log"}, "segmentation": {"intensity_scale": "log"}}
    mixed = {"registration": {"intensity_scale": "log"},
             "segmentation": {"intensity_scale": "linear"}}  # fmt:skip
    assert preprocessing_choices(both)["intensity_scale"] == "log"
    assert preprocessing_choices(mixed)["intensity_scale"] == "log-registration"
    segmented_only = {"segmentation": {"intensity_scale": "log"}}
    assert preprocessing_choices(segmented_only)["intensity_scale"] == "log"
    # QC from before the choices: what the oldest bundles were trained on
    assert preprocessing_choices({}) == {"brain_extraction": "template",
                                         "field_of_view": "stored", "intensity_scale": "linear",
                                         "stripped_n4_grid": "brain", "denoising": "none",
                                         "contrast_standardisation": "none",
                                         "bias_correction": "head"}  # fmt:skip
    assert preprocessing_choices({"n4": {"bias_correction": "brain"}})["bias_correction"] == "brain"
    assert (
        preprocessing_choices({"n4": {"contrast": "power"}})["contrast_standardisation"] == "power"
    )
