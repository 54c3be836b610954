"""The classical kinds follow scikit-learn's estimator rules (its own check suite)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from bids_brainage.models.classical import HistogramBoosting, HistogramLinear, TissueLinear
from bids_brainage.models.gpr import TissueGPR
from bids_brainage.models.kinds import KINDS, estimator_class, make_estimator, role_of

CLASSICAL = [HistogramLinear(), HistogramBoosting(), TissueLinear(), TissueGPR()]


@parametrize_with_checks(CLASSICAL)
def test_classical_kinds_pass_scikit_learn_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "ensemble"])
def test_every_kind_declares_what_the_package_reads(kind):
    cls = estimator_class(kind)
    assert cls.kind == kind
    assert cls.role in ("global", "local", "explainer")
    assert cls.storage in ("numpy", "torch", "skops")
    assert cls.input in ("histogram", "tissue", "t1w", None)
    assert (cls.input is None) == (cls.role == "explainer")
    assert callable(cls.from_state) and callable(cls.state)
    # clone() gives an unfitted copy with the same parameters: what cross-validation relies on
    model = make_estimator(kind, random_state=7)
    copy = clone(model)
    assert copy.get_params() == model.get_params() and copy is not model


def test_occlusion_and_unoise_need_what_their_kind_declares():
    assert estimator_class("tissue-linear").differentiable
    assert not estimator_class("hist-linear").volume_input
    assert role_of("ensemble") == "global" and role_of("local-unet") == "local"


def test_tissue_models_fit_volumes_and_flat_designs_alike():
    """A flat design (n, features) is fitted as given; volumes are block-averaged first."""
    rng = np.random.default_rng(0)
    y = rng.uniform(20, 80, 30)
    X = rng.normal(0, 1, (30, 12)) + y[:, None] / 20
    model = TissueLinear().fit(X, y)
    assert model.factor_ == 1 and model.curve_ == {} and len(model.voxels_) == 12
    assert np.mean(np.abs(model.predict(X) - y)) < np.mean(np.abs(np.median(y) - y))
