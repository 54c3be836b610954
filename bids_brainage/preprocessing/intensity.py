"""Intensity normalisation of T1w brains (seed 000) and the 200-bin histogram feature.

* **v1** (white stripe): the white-matter peak is set to 1.
* **v2**: the grey-matter and white-matter peaks are both pinned, to ``V2_GM_PEAK`` and
  ``V2_WM_PEAK``, by a piecewise-linear map through (0, 0), (GM, V2_GM_PEAK) and
  (WM, V2_WM_PEAK), extended past the WM peak with the GM-WM slope. Seed 000 introduced it
  because the grey-matter peak moves between scanners far more than the white-matter peak.

The targets keep CSF, GM and WM inside [0, 1], the histogram's range (seed 000: 200 bins on
[0, 1]).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

V2_GM_PEAK = 0.5
V2_WM_PEAK = 0.8
HISTOGRAM_BINS = 200
HISTOGRAM_RANGE = (0.0, 1.0)


def intensity_peak(values: np.ndarray, bins: int = 256, smooth_bins: float = 2.0) -> float:
    """The mode of ``values``: the highest bin of a smoothed histogram (robust to tails)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size < 10:
        raise ValueError(f"too few voxels ({values.size}) to find an intensity peak")
    lo, hi = np.percentile(values, [0.5, 99.5])
    if hi <= lo:
        return float(lo)
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    smoothed = ndimage.gaussian_filter1d(counts.astype(np.float64), smooth_bins)
    centre = int(np.argmax(smoothed))
    # Refine to sub-bin precision with a parabola through the peak and its neighbours.
    if 0 < centre < bins - 1:
        left, mid, right = smoothed[centre - 1 : centre + 2]
        denom = left - 2 * mid + right
        offset = 0.5 * (left - right) / denom if denom else 0.0
    else:
        offset = 0.0
    width = edges[1] - edges[0]
    return float(edges[0] + (centre + 0.5 + offset) * width)


def tissue_peaks(
    image: np.ndarray, gm_mask: np.ndarray, wm_mask: np.ndarray
) -> tuple[float, float]:
    """Grey- and white-matter intensity peaks, from the voxels of each tissue class."""
    gm = intensity_peak(image[gm_mask])
    wm = intensity_peak(image[wm_mask])
    if not 0 < gm < wm:
        raise ValueError(
            f"grey-matter peak ({gm:.4g}) is not between 0 and the white-matter peak "
            f"({wm:.4g}): not a T1-weighted contrast, or a failed segmentation"
        )
    return gm, wm


def normalise_v1(image: np.ndarray, wm_peak: float) -> np.ndarray:
    """White stripe: the white-matter peak goes to 1."""
    if wm_peak <= 0:
        raise ValueError(f"white-matter peak must be positive, got {wm_peak}")
    return (np.asarray(image, dtype=np.float32) / np.float32(wm_peak)).astype(np.float32)


def normalise_v2(
    image: np.ndarray,
    gm_peak: float,
    wm_peak: float,
    gm_target: float = V2_GM_PEAK,
    wm_target: float = V2_WM_PEAK,
) -> np.ndarray:
    """Pin the GM and WM peaks to fixed values with a monotone piecewise-linear map."""
    if not 0 < gm_peak < wm_peak:
        raise ValueError(f"need 0 < GM peak < WM peak, got {gm_peak} and {wm_peak}")
    x = np.asarray(image, dtype=np.float64)
    upper_slope = (wm_target - gm_target) / (wm_peak - gm_peak)
    out = np.where(
        x <= gm_peak, x * (gm_target / gm_peak), gm_target + (x - gm_peak) * upper_slope
    )
    return out.astype(np.float32)


def brain_histogram(
    normalised: np.ndarray,
    brain_mask: np.ndarray,
    bins: int = HISTOGRAM_BINS,
    value_range: tuple[float, float] = HISTOGRAM_RANGE,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The fraction of brain voxels in each of ``bins`` equal bins of ``value_range``.

    Returns the fractions (summing to the share of voxels inside the range), the bin edges and
    the share of brain voxels outside the range (reported in QC).
    """
    values = np.asarray(normalised)[np.asarray(brain_mask, dtype=bool)]
    if values.size == 0:
        raise ValueError("empty brain mask: no voxels to histogram")
    counts, edges = np.histogram(values, bins=bins, range=value_range)
    fractions = counts / values.size
    outside = 1.0 - float(fractions.sum())
    return fractions.astype(np.float64), edges, outside
