"""Invariance learnt from nuisance copies, checked on planted data: trained on as extra scans
with their source's age (augmentation, the default), or the fitted ridge made blind to the
directions of copy − original differences (external parameter orthogonalisation).
"""

from __future__ import annotations

import numpy as np
import pytest

from bids_brainage.models.classical import (
    TissueLinear,
    block_average,
    choose_factor,
    nuisance_basis,
)
from bids_brainage.models.training import cross_validate, fold_nuisance


def planted(rng, n=80, features=60):
    """Ages carried by features 0-9; a nuisance shifts features 5-14 by a common pattern."""
    age = rng.uniform(20, 80, n)
    X = rng.normal(0, 1, (n, features))
    X[:, :10] += (age[:, None] - 50) / 10
    pattern = np.zeros(features)
    pattern[5:15] = 1.5
    return X, age, pattern


def test_basis_is_orthonormal_and_holds_the_requested_energy(rng):
    differences = np.outer(rng.normal(3, 0.1, 20), rng.normal(0, 1, 30)) + rng.normal(
        0, 0.05, (20, 30))  # fmt:skip
    basis = nuisance_basis(differences, 0.9)
    assert basis.shape == (30, 1)  # one systematic direction holds > 90 %
    np.testing.assert_allclose(basis.T @ basis, np.eye(1), atol=1e-12)
    kept = np.linalg.norm(differences @ basis) ** 2 / np.linalg.norm(differences) ** 2
    assert kept >= 0.9
    assert nuisance_basis(differences, 1.0).shape[1] == 20  # all of it: every direction


def test_projection_makes_predictions_blind_to_the_nuisance(rng):
    X, age, pattern = planted(rng)
    differences = pattern + rng.normal(0, 0.05, (15, X.shape[1]))
    plain = TissueLinear((1,)).fit(X, age)
    aware = TissueLinear((1,), nuisance_energy=0.95, nuisance_use="project").fit(
        X, age, nuisance=differences)  # fmt:skip
    shifted = X + pattern
    plain_shift = np.abs(plain.predict(shifted) - plain.predict(X)).mean()
    aware_shift = np.abs(aware.predict(shifted) - aware.predict(X)).mean()
    assert plain_shift > 1.0  # the plain ridge reads the nuisance as age
    assert aware_shift < 0.05 * plain_shift
    assert aware.nuisance_components_ >= 1
    # and it still predicts age: features 0-4 carry age untouched by the nuisance
    assert np.abs(aware.predict(X) - age).mean() < np.abs(age - np.median(age)).mean() / 2


def test_volume_maps_take_the_nuisance_at_the_chosen_factor(rng):
    n = 40
    age = rng.uniform(20, 80, n)
    maps = rng.normal(0.5, 0.05, (n, 2, 8, 8, 8)).astype(np.float32)
    maps[:, 0, :4] += ((age - 50) / 200)[:, None, None, None]
    nuisance = np.zeros((6, 2, 8, 8, 8), np.float32)
    nuisance[:, 1, :, :4] = 0.05  # a WM shift in one half
    model = TissueLinear((2,), nuisance_energy=0.9, nuisance_use="project").fit(
        maps, age, nuisance=nuisance)  # fmt:skip
    shift = model.predict(maps + nuisance[0]) - model.predict(maps)
    assert np.abs(shift).max() < 1e-4  # float32 maps: exact up to rounding
    arrays, params = model.state()
    assert params["nuisance_components"] == model.nuisance_components_ == 1
    reloaded = TissueLinear.from_state(arrays, params)
    np.testing.assert_array_equal(reloaded.predict(maps), model.predict(maps))


def test_folds_learn_only_their_own_training_participants_copies(rng):
    participants = np.array([f"sub-{i:02d}" for i in range(10)])
    differences = np.arange(4)[:, None] * np.ones((4, 3))
    sources = np.array(["sub-01", "sub-05", "sub-05", "sub-09"])
    train = np.array([0, 1, 2, 3, 4])
    kept = fold_nuisance((differences, sources), participants, train)
    np.testing.assert_array_equal(kept["nuisance"], differences[[0]])
    np.testing.assert_array_equal(kept["nuisance_rows"], [1])  # sub-01 is X[train][1]
    later = fold_nuisance((differences, sources), participants, np.array([5, 7, 9]))
    np.testing.assert_array_equal(later["nuisance"], differences[[1, 2, 3]])
    np.testing.assert_array_equal(later["nuisance_rows"], [0, 0, 2])
    assert fold_nuisance(None, participants, train) == {}
    # a fold with no copy of its training participants trains without copies
    assert fold_nuisance((differences, sources), participants, np.array([2, 3, 4])) == {}


def test_augmentation_trains_on_the_copies_with_their_sources_age(rng):
    """Copies shifted by the nuisance pattern, labelled with their source's age, teach the
    ridge that the pattern is not age: the shift's effect falls, and age is still predicted.
    """
    X, age, pattern = planted(rng)
    rows = np.arange(0, len(X), 4)
    differences = pattern + rng.normal(0, 0.05, (len(rows), X.shape[1]))
    plain = TissueLinear((1,)).fit(X, age)
    augmented = TissueLinear((1,)).fit(X, age, nuisance=differences, nuisance_rows=rows)
    assert augmented.augmented_ == len(rows)
    shifted = X + pattern
    plain_shift = np.abs(plain.predict(shifted) - plain.predict(X)).mean()
    augmented_shift = np.abs(augmented.predict(shifted) - augmented.predict(X)).mean()
    assert plain_shift > 1.0
    assert augmented_shift < 0.3 * plain_shift
    assert np.abs(augmented.predict(X) - age).mean() < np.abs(age - np.median(age)).mean() / 2
    # the same as fitting the copies as plain extra scans
    by_hand = TissueLinear((1,)).fit(np.concatenate([X, X[rows] + differences]),
                                     np.concatenate([age, age[rows]]))  # fmt:skip
    np.testing.assert_allclose(augmented.predict(X), by_hand.predict(X), atol=1e-6)


def _maps_with_copies(rng, n=40):
    """GM maps that carry age in one half, and copies of every fifth scan whose WM is shifted
    in the other half (a nuisance)."""
    age = rng.uniform(20, 80, n)
    maps = rng.normal(0.5, 0.05, (n, 2, 8, 8, 8)).astype(np.float32)
    maps[:, 0, :4] += ((age - 50) / 200)[:, None, None, None]
    rows = np.arange(0, n, 5)
    nuisance = np.zeros((len(rows), 2, 8, 8, 8), np.float32)
    nuisance[:, 1, :, :4] = 0.05
    return age, maps, nuisance, rows


def test_augmented_volume_maps_use_only_inner_training_copies(rng):
    """On maps, the factor is chosen by inner CV: each inner fit may only see copies of its own
    training rows, and the final fit adds every copy.
    """
    age, maps, nuisance, rows = _maps_with_copies(rng)
    model = TissueLinear((2, 4)).fit(maps, age, nuisance=nuisance, nuisance_rows=rows)
    assert set(model.curve_) == {2, 4} and model.augmented_ == len(rows)
    plain = TissueLinear((model.factor_,)).fit(maps, age)
    shift = np.abs(model.predict(maps + nuisance[0]) - model.predict(maps)).mean()
    plain_shift = np.abs(plain.predict(maps + nuisance[0]) - plain.predict(maps)).mean()
    assert shift < plain_shift
    arrays, params = model.state()
    assert params["nuisance_use"] == "augment" and params["augmented_copies"] == len(rows)
    np.testing.assert_array_equal(TissueLinear.from_state(arrays, params).predict(maps),
                                  model.predict(maps))  # fmt:skip


def test_augmentation_needs_the_source_rows(rng):
    X, age, pattern = planted(rng, n=20)
    with pytest.raises(ValueError, match="nuisance_rows"):
        TissueLinear((1,)).fit(X, age, nuisance=pattern[None])
    with pytest.raises(ValueError, match="nuisance_use"):
        TissueLinear((1,), nuisance_use="ignore").fit(X, age)


def test_cross_validation_with_nuisance_scores_only_the_original_scans(rng):
    X, age, pattern = planted(rng, n=50)
    participants = np.array([f"sub-{i:02d}" for i in range(len(X))])
    differences = pattern + rng.normal(0, 0.05, (10, X.shape[1]))
    sources = participants[:10]
    result = cross_validate(TissueLinear((1,)), X, age, participants, ["A"] * len(X),
                            split="random", n_splits=5, seed=3,
                            nuisance=(differences, sources))  # fmt:skip
    assert len(result["predicted"]) == len(X)
    mae = np.mean(np.abs(result["predicted"] - age))
    assert np.isclose(result["pooled"]["mae"], mae)


def test_factor_choice_counts_the_held_out_copies_errors(rng):
    """``choose_factor`` with held-out copies: a factor that is accurate on the originals but
    reads the copies' nuisance as age loses to one that stays accurate on both.
    """
    n = 30
    y = np.linspace(20, 80, n)
    X = np.zeros((n, 1, 4, 4, 4), np.float32)
    X[:, 0, :, :2] = ((y - 50) / 30)[:, None, None, None]  # half the volume carries age
    nuisance = np.zeros((n, 1, 4, 4, 4), np.float32)
    nuisance[:, 0, 0, 3, 3] = 1.0  # one voxel moved by the nuisance
    fitted = {}

    def inner_fit(small, ages, factor, train):
        # factor 1 "over-fits" the nuisance voxel: it reads it as 30 years
        weights = np.zeros(small.shape[1])
        if factor == 1:
            weights[15] = 30.0
        fitted[factor] = True
        return lambda test: np.full(len(test), 50.0) + (test @ weights)

    def held_out_copies(small, factor, test):
        moved = block_average(nuisance[test], factor).reshape(len(test), -1)
        return small[test] + moved, y[test], small[test]

    plain, _, plain_best = choose_factor(X, y, (1, 2), 0, inner_fit)
    shifts = {}
    curve, _, best = choose_factor(X, y, (1, 2), 0, inner_fit, held_out_copies, shifts)
    assert plain[1] == plain[2] and plain_best == 1  # the same on the originals: first wins
    assert curve[1] > curve[2] and best == 2
    # each held-out copy's error is pooled with its source's: the hand-worked mean
    assert curve[1] == pytest.approx((np.abs(50 - y).mean() + np.abs(80 - y).mean()) / 2)
    assert shifts == {1: pytest.approx(30.0), 2: 0.0}


def test_factor_choice_prefers_factors_whose_copies_stay_within_the_limit():
    """A factor more accurate on average but whose copies move by more than the limit loses to
    one whose copies all stay within it; when none does, the most accurate wins.
    """
    y = np.linspace(20, 80, 20)
    maps = np.tile(y[:, None, None, None, None], (1, 1, 2, 2, 2)).astype(np.float32)
    jump = {1: 5.0, 2: 1.0}  # factor 1 moves each copy by 5 y, factor 2 by 1 y
    bias = {1: 0.0, 2: 3.0}  # but factor 1 is exact on the originals, factor 2 off by 3 y

    def inner_fit(small, ages, factor, train):
        return lambda test: test[:, 0] + bias[factor]

    def held_out_copies(small, factor, test):
        return small[test] + jump[factor], y[test], small[test]

    curve, _, best = choose_factor(maps, y, (1, 2), 0, inner_fit, held_out_copies)
    assert curve == {1: pytest.approx(2.5), 2: pytest.approx(3.5)}  # (0 + 5) / 2, (3 + 4) / 2
    assert best == 2
    jump[2] = 6.0  # now neither stays within the limit: accuracy decides
    _, _, best = choose_factor(maps, y, (1, 2), 0, inner_fit, held_out_copies)
    assert best == 1


def test_factor_choice_judges_a_percentile_of_the_copies_not_their_maximum():
    """One copy out of 20 moving by 10 y does not rule a factor out (a maximum grows with the
    number of copies); the shift kept is the 95th percentile, worked by hand: sorted changes
    1 (x19), 10 -> 1 + 0.05 * (10 - 1) = 1.45 y.
    """
    y = np.linspace(20, 80, 20)
    maps = np.tile(y[:, None, None, None, None], (1, 1, 2, 2, 2)).astype(np.float32)
    jump = np.ones(20)
    jump[0] = 10.0
    bias = {1: 0.0, 2: 3.0}

    def inner_fit(small, ages, factor, train):
        return lambda test: test[:, 0] + bias[factor]

    def held_out_copies(small, factor, test):
        return small[test] + jump[test][:, None], y[test], small[test]

    shifts = {}
    _, _, best = choose_factor(maps, y, (1, 2), 0, inner_fit, held_out_copies, shifts)
    assert shifts[1] == pytest.approx(1.45) and best == 1


def test_averaged_block_sizes_are_the_mean_of_ridges_fitted_alone(rng):
    """With two or more of ``averaged_factors`` among ``factors``, the prediction is the plain
    mean of the ridges each of those block sizes gives when fitted on its own (copies included);
    the bundle state and the torch function give the same numbers.
    """
    import torch

    age, maps, nuisance, rows = _maps_with_copies(rng)
    model = TissueLinear((1, 2, 4), averaged_factors=(2, 4)).fit(
        maps, age, nuisance=nuisance, nuisance_rows=rows)  # fmt:skip
    alone = [TissueLinear((f,)).fit(maps, age, nuisance=nuisance, nuisance_rows=rows)
             for f in (2, 4)]  # fmt:skip
    expected = np.mean([m.predict(maps) for m in alone], axis=0)
    np.testing.assert_allclose(model.predict(maps), expected, rtol=1e-10)
    assert set(model.curve_) == {1, 2, 4} and model.augmented_ == len(rows)
    arrays, params = model.state()
    assert [m["factor"] for m in params["members"]] == [2, 4]
    restored = TissueLinear.from_state(arrays, params)
    np.testing.assert_allclose(restored.predict(maps), expected, rtol=1e-10)
    as_torch = restored.torch_predict(torch.as_tensor(maps, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(as_torch, expected, rtol=1e-6)  # float32 block averages
    # one averaged factor among those searched: the single best block size, as before
    single = TissueLinear((1, 2), averaged_factors=(2, 4)).fit(maps, age)
    assert single.members_ == [] and "members" not in single.state()[1]
