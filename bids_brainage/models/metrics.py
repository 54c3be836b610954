"""Accuracy of age predictions: the metrics of seeds 000 and 001, and conformal intervals."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from sklearn.metrics import r2_score

CS_LEVELS = tuple(range(1, 11))  # years, seed 001's cumulative score
DECADES = tuple(range(10, 100, 10))
OLDER_THAN = 50.0  # seed 000's "older or younger than 50" accuracy


def cumulative_score(age, predicted, alpha: float) -> float:
    """CS(alpha): the fraction of scans whose absolute error is at most ``alpha`` years."""
    errors = np.abs(np.asarray(predicted, float) - np.asarray(age, float))
    return float(np.mean(errors <= alpha))


def mae_by_decade(age, predicted) -> dict[str, float]:
    """MAE within each decade of chronological age that has scans (``"20-29": 4.1``)."""
    age, predicted = np.asarray(age, float), np.asarray(predicted, float)
    out = {}
    for low in DECADES:
        inside = (age >= low) & (age < low + 10)
        if inside.any():
            out[f"{low}-{low + 9}"] = float(np.mean(np.abs(predicted[inside] - age[inside])))
    return out


def accuracy_metrics(age, predicted, *, baseline_age: float | None = None) -> dict:
    """MAE, r, R², CS(1..10), MAE per decade, older/younger-than-50 accuracy, median baseline.

    ``baseline_age`` is what the naive model predicts for everyone (seed 000's F(X) = 27): the
    median age of the *training* data; the median of ``age`` itself when not given.
    """
    age, predicted = np.asarray(age, float), np.asarray(predicted, float)
    if age.size < 2:
        raise ValueError("accuracy needs at least two predictions")
    baseline = float(np.median(age)) if baseline_age is None else float(baseline_age)
    r = (
        stats.pearsonr(age, predicted).statistic
        if np.ptp(predicted) > 0 and np.ptp(age) > 0
        else math.nan
    )
    return {
        "n": int(age.size),
        "mae": float(np.mean(np.abs(predicted - age))),
        "r": float(r),
        "r2": float(r2_score(age, predicted)),
        "cs": {str(a): cumulative_score(age, predicted, a) for a in CS_LEVELS},
        "mae_by_decade": mae_by_decade(age, predicted),
        "older_than_50_accuracy": float(np.mean((predicted > OLDER_THAN) == (age > OLDER_THAN))),
        "baseline_age": baseline,
        "baseline_mae": float(np.mean(np.abs(baseline - age))),
    }


def _leaves(metrics: dict, path=()):
    """(key path, value) of every scalar in a nested metrics dict, fold sizes left out."""
    for key, value in metrics.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*path, key))
        elif key != "n":
            yield (*path, key), value


def summarise_folds(per_fold: list[dict]) -> dict:
    """Mean and SD over folds of every scalar metric, nested as the metrics are.

    A metric missing from a fold (a decade without scans) or NaN there (r of a constant
    prediction) is summarised over the folds that have it.
    """
    values: dict[tuple, list[float]] = {}
    for fold in per_fold:
        for path, value in _leaves(fold):
            finite = isinstance(value, (int, float)) and not math.isnan(value)
            values.setdefault(path, []).extend([float(value)] if finite else [])
    out: dict = {}
    for path in sorted(values):
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        found = values[path]
        node[path[-1]] = {
            "mean": float(np.mean(found)) if found else math.nan,
            "sd": float(np.std(found, ddof=1)) if len(found) > 1 else math.nan,
            "folds": len(found),
        }
    return out


def conformal_halfwidth(residuals, coverage: float = 0.9) -> float:
    """Split-conformal half-width: the ceil((n+1)·coverage)-th smallest absolute residual.

    With exchangeable calibration and test scans, ``prediction ± halfwidth`` holds the true age
    with probability at least ``coverage`` (Lei et al. 2018). Infinite when n is too small.
    """
    scores = np.sort(np.abs(np.asarray(residuals, float)))
    rank = math.ceil((scores.size + 1) * coverage)
    return float(scores[rank - 1]) if rank <= scores.size else math.inf
