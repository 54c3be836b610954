"""Per-site calibration of brain-PAD on each site's own healthy controls (issue 18 §5).

A model trained on one scanner carries that scanner's offset to every other. After the pooled
age-bias line (:mod:`bids_brainage.stats.bias`) each site with enough controls gets its own
correction, fitted on its controls' PAD:

- an **offset**: the mean residual PAD of the site's controls around the pooled line, with its
  standard error ``sd / sqrt(n)``;
- plus a **slope** when the controls span at least ``MIN_SPAN_YEARS``: the site's own line
  ``PAD = alpha_s * age + beta_s`` replaces the pooled one there.

A site with fewer than ``MIN_SITE_CONTROLS`` controls keeps the pooled line and is flagged.
The floor of 20 follows common practice (20-25 controls per site for a stable offset; with
SD(PAD) ≈ 5-6 y, 20 controls give an offset SE of about 1.2 y). The split-conformal interval
is recalibrated on the site's controls when it has at least that many: the
``ceil((n + 1) * coverage) / n`` empirical quantile of their |corrected PAD|.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

MIN_SITE_CONTROLS = 20
MIN_SPAN_YEARS = 20.0


@dataclass(frozen=True)
class SiteCalibration:
    """How one site's brain-PAD is corrected."""

    site: str
    mode: str  # "site line", "site offset" or "pooled"
    n_controls: int
    age_span: float
    alpha: float  # slope of the line subtracted at this site
    beta: float  # its intercept
    offset: float  # mean residual of the site's controls around the pooled line
    offset_se: float
    slope_se: float
    interval_halfwidth: float  # conformal |corrected PAD| quantile on the site's controls
    note: str


def _conformal_quantile(residuals: np.ndarray, coverage: float) -> float:
    n = len(residuals)
    rank = math.ceil((n + 1) * coverage)
    if rank > n:
        return math.inf
    return float(np.sort(np.abs(residuals))[rank - 1])


def fit_site_calibrations(
    controls: pd.DataFrame,
    sites: list[str],
    pooled_alpha: float,
    pooled_beta: float,
    *,
    coverage: float = 0.9,
    min_controls: int = MIN_SITE_CONTROLS,
    min_span: float = MIN_SPAN_YEARS,
) -> dict[str, SiteCalibration]:
    """One calibration per site in ``sites``, from ``controls`` (site, age, predicted_age; one
    scan per participant). ``pooled_alpha``/``pooled_beta``: the pooled bias line (PAD on age).
    """
    result = {}
    for site in sites:
        own = controls[(controls["site"].astype(str) == str(site))]
        own = own[np.isfinite(own["age"]) & np.isfinite(own["predicted_age"])]
        age = own["age"].to_numpy(float)
        pad = own["predicted_age"].to_numpy(float) - age
        n = len(own)
        span = float(np.ptp(age)) if n else 0.0
        if n < min_controls:
            result[site] = SiteCalibration(
                site, "pooled", n, span, pooled_alpha, pooled_beta, math.nan, math.nan,
                math.nan, math.nan,
                f"{n} control(s) at this site, fewer than {min_controls}: pooled correction, "
                "site offset not removed")  # fmt:skip
            continue
        residual = pad - (pooled_alpha * age + pooled_beta)
        offset, offset_se = float(residual.mean()), float(residual.std(ddof=1) / math.sqrt(n))
        if span >= min_span:
            fit = stats.linregress(age, pad)
            alpha, beta, slope_se = float(fit.slope), float(fit.intercept), float(fit.stderr)
            mode, note = "site line", f"own line on {n} controls spanning {span:.0f} y"
        else:
            alpha, beta, slope_se = pooled_alpha, pooled_beta + offset, math.nan
            mode = "site offset"
            note = (f"offset on {n} controls (ages span {span:.0f} y < {min_span:g}: pooled "
                    "slope kept)")  # fmt:skip
        corrected = pad - (alpha * age + beta)
        result[site] = SiteCalibration(site, mode, n, span, alpha, beta, offset, offset_se,
                                       slope_se, _conformal_quantile(corrected, coverage),
                                       note)  # fmt:skip
    return result


def apply_site_calibrations(scans: pd.DataFrame, calibrations: dict[str, SiteCalibration]):
    """(corrected PAD, calibration mode, interval half-width) per scan (site, age, predicted)."""
    pads, modes, widths = [], [], []
    for row in scans.itertuples():
        calibration = calibrations.get(str(row.site))
        if calibration is None or not math.isfinite(row.age):
            pads.append(math.nan)
            modes.append("none")
            widths.append(math.nan)
            continue
        pads.append((row.predicted_age - row.age) - (calibration.alpha * row.age
                                                     + calibration.beta))  # fmt:skip
        modes.append(calibration.mode)
        widths.append(calibration.interval_halfwidth)
    return (pd.Series(pads, index=scans.index, dtype=float),
            pd.Series(modes, index=scans.index, dtype=object),
            pd.Series(widths, index=scans.index, dtype=float))  # fmt:skip
