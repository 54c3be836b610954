"""Accuracy metrics, fold summaries, conformal intervals and outer folds, against independent
computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bids_brainage.models.metrics import (
    accuracy_metrics,
    conformal_halfwidth,
    cumulative_score,
    mae_by_decade,
    summarise_folds,
)
from bids_brainage.models.training import conformal_coverage, outer_folds


def test_cumulative_score_hand_example():
    age = [20, 30, 40, 50]
    predicted = [21, 33, 40, 60]  # errors 1, 3, 0, 10
    assert cumulative_score(age, predicted, 1) == 0.5
    assert cumulative_score(age, predicted, 3) == 0.75
    assert cumulative_score(age, predicted, 10) == 1.0


def test_accuracy_metrics_match_scipy_and_hand(rng):
    age = rng.uniform(20, 80, 50)
    predicted = age + rng.normal(0, 5, 50)
    m = accuracy_metrics(age, predicted)
    assert m["mae"] == pytest.approx(np.mean(np.abs(predicted - age)), abs=1e-12)
    assert m["r"] == pytest.approx(stats.pearsonr(age, predicted)[0], abs=1e-12)
    r2 = 1 - np.sum((age - predicted) ** 2) / np.sum((age - age.mean()) ** 2)
    assert m["r2"] == pytest.approx(r2, abs=1e-12)
    assert m["baseline_mae"] == pytest.approx(np.mean(np.abs(np.median(age) - age)), abs=1e-12)
    assert m["older_than_50_accuracy"] == pytest.approx(
        np.mean((predicted > 50) == (age > 50)), abs=1e-12
    )


def test_mae_by_decade_hand_example():
    out = mae_by_decade([22, 28, 35, 71], [24, 28, 30, 70])
    assert out == {"20-29": 1.0, "30-39": 5.0, "70-79": 1.0}


def test_summarise_folds_is_mean_and_sample_sd():
    folds = [{"mae": 4.0, "cs": {"5": 0.5}}, {"mae": 6.0, "cs": {"5": 0.7}},
             {"mae": 8.0, "cs": {"5": 0.9}}]  # fmt:skip
    out = summarise_folds(folds)
    assert out["mae"]["mean"] == 6.0 and out["mae"]["sd"] == pytest.approx(2.0)
    assert out["cs"]["5"]["mean"] == pytest.approx(0.7)
    assert out["cs"]["5"]["sd"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))


def test_conformal_halfwidth_rank_and_small_samples():
    residuals = [-1, 2, -3, 4, 5, -6, 7, 8, -9]  # n = 9: rank ceil(10 * 0.9) = 9
    assert conformal_halfwidth(residuals, 0.9) == 9
    assert conformal_halfwidth(residuals, 0.5) == 5  # rank ceil(10 * 0.5) = 5
    assert conformal_halfwidth([1, 2, 3], 0.9) == np.inf  # too few to promise 90 %


def test_conformal_coverage_is_near_nominal_on_exchangeable_errors(rng):
    n = 2000
    y = rng.uniform(20, 80, n)
    predicted = y + rng.normal(0, 5, n)
    fold = np.arange(n) % 5
    out = conformal_coverage(y, predicted, fold, 0.9)
    assert abs(out["empirical"] - 0.9) < 0.02
    assert out["mean_halfwidth"] == pytest.approx(5 * stats.norm.ppf(0.95), rel=0.05)


def test_random_folds_keep_a_participants_scans_together():
    participants = np.repeat([f"p{i}" for i in range(12)], 2)
    sites = np.tile(["A", "B"], 12)
    for train, test in outer_folds(participants, sites, "random", 4, seed=0):
        assert not set(participants[train]) & set(participants[test])


def test_site_folds_leave_one_site_out():
    participants = np.arange(9).astype(str)
    sites = np.array(list("AAABBBCCC"))
    folds = outer_folds(participants, sites, "site", 5, seed=0)
    assert len(folds) == 3
    assert sorted(set(sites[test]).pop() for _, test in folds) == ["A", "B", "C"]
    for train, test in folds:
        assert len(set(sites[test])) == 1 and set(sites[test]).isdisjoint(sites[train])
    with pytest.raises(ValueError, match="two sites"):
        outer_folds(participants, np.array(["A"] * 9), "site", 5, seed=0)
