"""Invariance learnt from nuisance copies: the fitted ridge is blind to the directions of
copy − original differences (external parameter orthogonalisation), checked on planted data.
"""

from __future__ import annotations

import numpy as np

from bids_brainage.models.classical import TissueLinear, nuisance_basis
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
    aware = TissueLinear((1,), nuisance_energy=0.95).fit(X, age, nuisance=differences)
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
    model = TissueLinear((2,), nuisance_energy=0.9).fit(maps, age, nuisance=nuisance)
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
    kept = fold_nuisance((differences, sources), participants, train)["nuisance"]
    np.testing.assert_array_equal(kept, differences[[0]])
    assert fold_nuisance(None, participants, train) == {}


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
