"""v1/v2 normalisation and the histogram, on images with known peaks."""

import numpy as np
import pytest

from bids_brainage.preprocessing.intensity import (
    HISTOGRAM_BINS,
    V2_GM_PEAK,
    V2_WM_PEAK,
    brain_histogram,
    intensity_peak,
    normalise_v1,
    normalise_v2,
    tissue_peaks,
)


def tissue_image(rng, gm=420.0, wm=700.0, csf=150.0, shape=(30, 32, 34)):
    """A brain of three tissue slabs with known means (the peaks) and noise."""
    labels = rng.integers(0, 3, size=shape)
    means = np.array([csf, gm, wm])
    image = means[labels] + rng.normal(0, 0.04 * wm, size=shape)
    return image.astype(np.float32), labels


def test_peak_of_a_known_mixture(rng):
    values = np.concatenate([rng.normal(420, 20, 20000), rng.normal(700, 25, 40000)])
    assert intensity_peak(values) == pytest.approx(700, abs=5)
    assert intensity_peak(values[:20000]) == pytest.approx(420, abs=5)


def test_tissue_peaks_and_v1(rng):
    image, labels = tissue_image(rng)
    gm, wm = tissue_peaks(image, labels == 1, labels == 2)
    assert gm == pytest.approx(420, rel=0.02) and wm == pytest.approx(700, rel=0.02)
    v1 = normalise_v1(image, wm)
    assert intensity_peak(v1[labels == 2]) == pytest.approx(1.0, abs=0.02)
    assert v1.dtype == np.float32


@pytest.mark.parametrize(("gm", "wm"), [(420.0, 700.0), (300.0, 900.0), (0.55, 0.95)])
def test_v2_pins_both_peaks_whatever_the_scanner(rng, gm, wm):
    image, labels = tissue_image(rng, gm=gm, wm=wm, csf=gm / 3)
    gm_peak, wm_peak = tissue_peaks(image, labels == 1, labels == 2)
    v2 = normalise_v2(image, gm_peak, wm_peak)
    assert intensity_peak(v2[labels == 1]) == pytest.approx(V2_GM_PEAK, abs=0.015)
    assert intensity_peak(v2[labels == 2]) == pytest.approx(V2_WM_PEAK, abs=0.015)


def test_v2_is_the_piecewise_linear_map_by_hand():
    out = normalise_v2(np.array([0.0, 100.0, 200.0, 300.0, 400.0]), 200.0, 300.0)
    # below GM: x * 0.5/200; above: 0.5 + (x - 200) * 0.3/100
    np.testing.assert_allclose(out, [0.0, 0.25, 0.5, 0.8, 1.1], atol=1e-6)
    assert np.all(np.diff(out) > 0)


def test_v2_refuses_inverted_contrast():
    with pytest.raises(ValueError, match="GM peak < WM peak"):
        normalise_v2(np.ones(3), 500.0, 300.0)
    rng = np.random.default_rng(0)
    image, labels = tissue_image(rng, gm=700.0, wm=420.0)  # T2-like: a mislabelled image
    with pytest.raises(ValueError, match="not a T1-weighted contrast"):
        tissue_peaks(image, labels == 1, labels == 2)


def test_histogram_counts_by_hand():
    values = np.array([0.0, 0.0024, 0.0051, 0.5, 0.999, 1.5, -0.1])
    fractions, edges, outside = brain_histogram(values, np.ones(values.size, bool))
    assert fractions.shape == (HISTOGRAM_BINS,) and edges[1] == pytest.approx(0.005)
    assert fractions[0] == pytest.approx(2 / 7) and fractions[1] == pytest.approx(1 / 7)
    assert fractions[100] == pytest.approx(1 / 7) and fractions[-1] == pytest.approx(1 / 7)
    assert outside == pytest.approx(2 / 7)
    np.testing.assert_allclose(fractions, np.histogram(values, 200, (0, 1))[0] / 7)
