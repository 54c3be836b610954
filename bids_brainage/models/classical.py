"""Seed 000's classical models: ridge and gradient boosting on the v2 histogram, ridge on
downsampled template-space tissue maps (the downsampling factor chosen by nested CV).

The estimators follow scikit-learn's rules (parameters in ``__init__``, fitted attributes ending
in ``_``, ``clone``-able) and keep their fitted state as plain arrays plus JSON parameters, so a
bundle is saved without pickle (``state``/``from_state``); gradient boosting is stored with
skops.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.utils.validation import check_is_fitted, validate_data

RIDGE_ALPHAS = tuple(10.0**k for k in range(-2, 7))
TISSUE_FACTORS = (2, 3, 4, 6, 8)  # of the 2 mm grid: 4 to 16 mm voxels
# tissue-linear averages the ridges fitted on 8, 12 and 16 mm blocks (issue 18, round 19): held
# out, training copies moved less than with the single best block size (at most 4.64 against
# 5.35 y; benchmarks/nuisance_training.py) at a CV error 0.1 y lower
AVERAGED_FACTORS = (4, 6, 8)
# what tissue-linear does with nuisance copies of training scans: train on them with their
# source's age, or project their main directions out of the features
NUISANCE_USES = ("augment", "project")
COPY_SHIFT_LIMIT = 4.0  # years: issue 18's largest allowed change of age between copies
# judged on this percentile of the held-out copies' changes, not their maximum: a maximum grows
# with the number of copies; with the 95th within the limit, the largest change over 3 scans
# (issue 18's benchmark) stays within it with probability >= 0.95 ** 3 = 0.86
COPY_SHIFT_PERCENTILE = 95.0
INNER_FOLDS = 5


def _check_fit(model, X, y):
    """Validated training data: finite, two samples or more; volumes (n, channels, x, y, z) are
    kept in their float dtype (a float64 copy of a training set of maps would double its size).
    """
    return validate_data(model, X, y, y_numeric=True, allow_nd=True, ensure_min_samples=2,
                         dtype=[np.float64, np.float32])  # fmt:skip


def _check_predict(model, X):
    return validate_data(model, X, reset=False, allow_nd=True, dtype=[np.float64, np.float32])


class LinearAgeModel(RegressorMixin, BaseEstimator):
    """Standardised features -> ridge, the penalty chosen by efficient leave-one-out (RidgeCV)."""

    input = "histogram"
    role = "global"
    differentiable = False
    volume_input = False
    storage = "numpy"

    def __init__(self, random_state=0):
        self.random_state = random_state  # unused (the fit is deterministic); kept for clone()

    @classmethod
    def for_grid(cls, affine=None, *, settings=None, threads=2, random_state=0):
        return cls(random_state=random_state)

    def _design(self, X):
        return np.asarray(X, np.float64).reshape(len(X), -1)

    def _fit_design(self, X, y, nuisance=None, energy=1.0):
        """Ridge on standardised features; with ``nuisance`` (copy − original feature rows),
        the main directions of those differences are projected out first, so the fitted
        coefficients are orthogonal to them (Roger et al. 2003's external parameter
        orthogonalisation): the prediction ignores the nuisance's most common effects.
        """
        self.mean_ = X.mean(axis=0)
        self.scale_ = X.std(axis=0)
        self.scale_[self.scale_ == 0] = 1.0
        Z = (X - self.mean_) / self.scale_
        self.nuisance_components_ = 0
        if nuisance is not None and len(nuisance):
            basis = nuisance_basis(nuisance / self.scale_, energy)
            Z = Z - (Z @ basis) @ basis.T
            self.nuisance_components_ = basis.shape[1]
        ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit(Z, y)
        self.coef_, self.intercept_ = ridge.coef_, float(ridge.intercept_)
        self.alpha_ = ridge.alpha_
        return self

    def _predict_design(self, X):
        return ((X - self.mean_) / self.scale_) @ self.coef_ + self.intercept_

    def fit(self, X, y):
        X, y = validate_data(self, X, y, y_numeric=True, ensure_min_samples=2, dtype=np.float64)
        return self._fit_design(self._design(X), y)

    def predict(self, X):
        check_is_fitted(self)
        return self._predict_design(self._design(validate_data(self, X, reset=False,
                                                               dtype=np.float64)))  # fmt:skip

    def state(self) -> tuple[dict, dict]:
        arrays = {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_}
        return arrays, {"intercept": self.intercept_, "alpha": self.alpha_}

    @classmethod
    def from_state(cls, arrays: dict, params: dict, threads: int = 1):
        model = cls()
        model.mean_, model.scale_, model.coef_ = arrays["mean"], arrays["scale"], arrays["coef"]
        model.intercept_, model.alpha_ = params["intercept"], params["alpha"]
        model.n_features_in_ = len(model.mean_)
        return model


class HistogramLinear(LinearAgeModel):
    """Seed 000's first model: a linear model on the 200-bin v2 histogram."""

    kind = "hist-linear"


class HistogramBoosting(RegressorMixin, BaseEstimator):
    """Gradient-boosted trees on the histogram (absolute-error loss, 150 trees of 7 leaves), the
    learning rate chosen by a 3-fold inner CV (kept small: boosting is the slowest classical
    kind).
    """

    kind = "hist-gbm"
    input = "histogram"
    role = "global"
    differentiable = False
    volume_input = False
    storage = "skops"
    grid = {"learning_rate": [0.05, 0.15]}

    def __init__(self, random_state=0):
        self.random_state = random_state

    @classmethod
    def for_grid(cls, affine=None, *, settings=None, threads=2, random_state=0):
        return cls(random_state=random_state)

    def fit(self, X, y):
        X, y = validate_data(self, X, y, y_numeric=True, ensure_min_samples=2, dtype=np.float64)
        search = GridSearchCV(
            HistGradientBoostingRegressor(
                loss="absolute_error", max_iter=150, max_leaf_nodes=7, early_stopping=False,
                min_samples_leaf=5, random_state=self.random_state),
            self.grid,
            cv=KFold(min(3, len(y)), shuffle=True, random_state=self.random_state),
            scoring="neg_mean_absolute_error",
        )  # fmt:skip
        search.fit(X, y)
        self.model_, self.best_ = search.best_estimator_, search.best_params_
        return self

    def predict(self, X):
        check_is_fitted(self)
        return self.model_.predict(validate_data(self, X, reset=False, dtype=np.float64))

    def state(self) -> tuple[bytes, dict]:
        import skops.io as sio

        return sio.dumps(self.model_), {"best": self.best_}

    @classmethod
    def from_state(cls, data: bytes, params: dict, threads: int = 1):
        import skops.io as sio

        allowed = {"sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"}
        untrusted = set(sio.get_untrusted_types(data=data))
        if untrusted - allowed:
            raise ValueError(f"skops file holds unexpected types {sorted(untrusted - allowed)}")
        model = cls()
        model.model_ = sio.loads(data, trusted=sorted(untrusted))
        if not isinstance(model.model_, HistGradientBoostingRegressor):
            raise ValueError("skops file does not hold a HistGradientBoostingRegressor")
        model.best_ = params.get("best")
        model.n_features_in_ = model.model_.n_features_in_
        return model


def block_average(maps: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor``³ blocks of the last three axes (edges padded with zeros)."""
    if factor == 1:
        return maps
    pad = [(0, 0)] * (maps.ndim - 3) + [(0, (-s) % factor) for s in maps.shape[-3:]]
    padded = np.pad(maps, pad)
    shape = padded.shape[:-3]
    for s in padded.shape[-3:]:
        shape += (s // factor, factor)
    blocks = padded.reshape(shape)
    return blocks.mean(axis=tuple(range(maps.ndim - 3 + 1, blocks.ndim, 2)))


def choose_factor(X, y, factors, seed: int, inner_fit, held_out_copies=None, shifts=None):
    """Inner-CV MAE of each block-averaging factor (seed 000's over/under-fitting curve).

    ``inner_fit(small, ages, factor, rows)`` fits on block-averaged maps (``rows``: their
    indices in X) and returns a predictor of held-out block-averaged maps. Returns the curve,
    the block averages of every factor (computed once per scan, then sliced for each fold) and
    the best factor. ``held_out_copies(small, factor, test)``, when given, returns the
    block-averaged nuisance copies of the held-out rows, their ages and their sources' rows:
    their errors count in the curve too, the ``COPY_SHIFT_PERCENTILE`` percentile of the
    |copy − source| predictions of each factor is put in ``shifts``, and the best factor is the
    most accurate of those whose percentile stays within ``COPY_SHIFT_LIMIT`` years (issue 18's
    maximum), if any does.
    """
    X, y = np.asarray(X, np.float32), np.asarray(y, np.float64)
    inner = KFold(min(INNER_FOLDS, len(y)), shuffle=True, random_state=seed)
    curve, designs, moved_by = {}, {}, {}
    for factor in factors:
        small = designs[factor] = block_average(X, factor).reshape(len(X), -1)
        errors, moved = [], [np.zeros(0)]
        for train, test in inner.split(small):
            predict = inner_fit(small[train], y[train], factor, train)
            errors.append(np.abs(predict(small[test]) - y[test]))
            if held_out_copies is not None:
                copies, ages, sources = held_out_copies(small, factor, test)
                if len(copies):
                    predicted = predict(copies)
                    errors.append(np.abs(predicted - ages))
                    moved.append(np.abs(predicted - predict(sources)))
        curve[factor] = float(np.mean(np.concatenate(errors)))
        moved = np.concatenate(moved)
        moved_by[factor] = float(np.percentile(moved, COPY_SHIFT_PERCENTILE) if len(moved) else 0)
    if shifts is not None:
        shifts.update(moved_by)
    steady = [f for f in factors if moved_by[f] <= COPY_SHIFT_LIMIT] or list(factors)
    return curve, designs, min(steady, key=curve.get)


def nuisance_basis(differences: np.ndarray, energy: float) -> np.ndarray:
    """Orthonormal columns spanning the fewest leading directions of ``differences`` (rows:
    copy − original) that hold ``energy`` of their summed squares; the mean shift of a
    systematic nuisance is the first of them.
    """
    _, values, vectors = np.linalg.svd(np.asarray(differences, np.float64), full_matrices=False)
    share = np.cumsum(values**2) / max(float(np.sum(values**2)), 1e-12)
    k = min(int(np.searchsorted(share, energy - 1e-9)) + 1, len(values))
    return vectors[:k].T


def _in_brain(small: np.ndarray, volumes: bool) -> np.ndarray:
    """Indices of the features kept: block-averaged voxels inside the training brains, or every
    feature of a flat design matrix.
    """
    return np.flatnonzero(small.mean(axis=0) > 0.01) if volumes else np.arange(small.shape[1])


def _blocks(X, factor: int) -> np.ndarray:
    """Volumes (n, channels, x, y, z) → flat block averages; a flat design is returned as is."""
    X = np.asarray(X, np.float32)
    return X if X.ndim == 2 else block_average(X, factor).reshape(len(X), -1)


def _torch_blocks(X, factor: int, voxels):
    """``_blocks`` then the kept features, as a differentiable torch function (U-noise)."""
    import torch
    from torch.nn import functional as F

    pad = [p for s in reversed(X.shape[-3:]) for p in (0, (-s) % factor)]
    small = F.avg_pool3d(F.pad(X, pad), factor) if factor > 1 else X
    return small.reshape(len(X), -1)[:, torch.as_tensor(voxels)].to(torch.float64)


class TissueLinear(LinearAgeModel):
    """Ridge on GM and WM modulated maps block-averaged by a factor chosen by inner CV, or the
    average of the ridges fitted at each of ``averaged_factors`` (those of them in ``factors``;
    fewer than two: the single best factor).

    Seed 000: too little downsampling over-fits, too much under-fits; the inner-CV MAE of every
    factor is kept (``curve_``) to show that curve. A flat (n, features) design is fitted as is.
    """

    kind = "tissue-linear"
    input = "tissue"
    differentiable = True
    volume_input = True
    learns_nuisance = True  # fit(..., nuisance=copy − original maps, nuisance_rows=sources)

    def __init__(self, factors=TISSUE_FACTORS, nuisance_energy=0.9, nuisance_use="augment",
                 averaged_factors=AVERAGED_FACTORS, random_state=0):  # fmt:skip
        self.factors = factors
        self.nuisance_energy = nuisance_energy
        self.nuisance_use = nuisance_use
        self.averaged_factors = averaged_factors
        self.random_state = random_state

    def _averaged(self) -> list[int]:
        chosen = [f for f in self.factors if f in tuple(self.averaged_factors or ())]
        return chosen if len(chosen) > 1 else []

    def _design(self, X):
        return _blocks(X, self.factor_)[:, self.voxels_].astype(np.float64)

    def _fit_small(self, small, y, factor, volumes=True, nuisance=None, rows=None):
        """Fit on block-averaged maps (n, voxels); keep the voxels inside the brains.
        ``nuisance``: the nuisance differences block-averaged the same way, ``rows``: the row
        of ``small`` each was copied from.
        """
        self.factor_ = factor
        self.voxels_ = _in_brain(small, volumes)
        design = small[:, self.voxels_].astype(np.float64)
        self.augmented_ = 0
        if nuisance is not None and self.nuisance_use == "augment":
            # block averaging is linear: the copies' design is the source's plus the difference
            copies = design[rows] + nuisance[:, self.voxels_]
            design, y = np.concatenate([design, copies]), np.concatenate([y, y[rows]])
            self.augmented_ = len(rows)
            return self._fit_design(design, y)
        if nuisance is not None:
            nuisance = nuisance[:, self.voxels_].astype(np.float64)
        return self._fit_design(design, y, nuisance, self.nuisance_energy)

    def fit(self, X, y, nuisance=None, nuisance_rows=None):
        """``nuisance``: optional copy − original maps of training scans (same layout as X),
        ``nuisance_rows``: the row of X each copy was made from. With ``nuisance_use="augment"``
        the copies join the training set with their source's age, and the block size is chosen
        by the inner-CV error on held-out scans and their copies; with ``"project"`` the model
        is made blind to their main directions (``nuisance_energy`` of them).
        """
        X, y = _check_fit(self, X, y)
        self.members_ = []
        if self.nuisance_use not in NUISANCE_USES:
            raise ValueError(f"nuisance_use {self.nuisance_use!r}; known: {NUISANCE_USES}")
        small_nuisance = dict.fromkeys(self.factors)
        rows = None
        if nuisance is not None:
            nuisance = np.asarray(nuisance, np.float32)
            if nuisance.shape[1:] != X.shape[1:]:
                raise ValueError(f"nuisance maps {nuisance.shape[1:]} unlike X {X.shape[1:]}")
            if self.nuisance_use == "augment":
                if nuisance_rows is None or len(nuisance_rows) != len(nuisance):
                    raise ValueError("augmenting with nuisance copies needs the row of X each "
                                     "was made from (nuisance_rows)")  # fmt:skip
                rows = np.asarray(nuisance_rows, int)
            # block averages once per factor, not once per inner fold
            small_nuisance = {f: _blocks(nuisance, f) for f in (self.factors if X.ndim > 2
                                                               else (1,))}  # fmt:skip
        if X.ndim == 2:
            self.curve_ = {}
            return self._fit_small(X, y, 1, volumes=False, nuisance=small_nuisance.get(1),
                                   rows=rows)  # fmt:skip

        def inner_fit(small, ages, factor, train):
            inner, inner_rows = small_nuisance[factor], None
            if inner is not None and rows is not None:  # copies of inner-training scans only
                keep = np.isin(rows, train)
                inner, inner_rows = inner[keep], np.searchsorted(train, rows[keep])
            model = TissueLinear((factor,), self.nuisance_energy, self.nuisance_use)._fit_small(
                small, ages, factor, nuisance=inner, rows=inner_rows)  # fmt:skip
            return lambda test: model._predict_design(test[:, model.voxels_])

        def held_out_copies(small, factor, test):
            keep = np.isin(rows, test)
            sources = small[rows[keep]]
            return sources + small_nuisance[factor][keep], y[rows[keep]], sources

        self.copy_shift_ = {}
        self.curve_, designs, best = choose_factor(
            X, y, self.factors, self.random_state, inner_fit,
            held_out_copies if rows is not None else None, self.copy_shift_)  # fmt:skip
        self.members_ = [
            TissueLinear((f,), self.nuisance_energy, self.nuisance_use, ())._fit_small(
                designs[f], y, f, nuisance=small_nuisance[f], rows=rows)
            for f in self._averaged()
        ]  # fmt:skip
        for member in self.members_:
            member.curve_ = {}
        if self.members_:
            self.factor_, self.augmented_ = best, self.members_[0].augmented_
            self.nuisance_components_ = 0
            return self
        return self._fit_small(designs[best], y, best, nuisance=small_nuisance[best], rows=rows)

    def predict(self, X):
        check_is_fitted(self)
        X = _check_predict(self, X)
        if getattr(self, "members_", None):
            return np.mean([m._predict_design(m._design(X)) for m in self.members_], axis=0)
        return self._predict_design(self._design(X))

    def torch_predict(self, X):
        """``predict`` as a differentiable torch function of (N, 2, X, Y, Z) maps (U-noise)."""
        import torch

        if getattr(self, "members_", None):
            return torch.stack([m.torch_predict(X) for m in self.members_]).mean(dim=0)
        flat = _torch_blocks(X, self.factor_, self.voxels_)
        weights = torch.as_tensor(self.coef_ / self.scale_)
        offset = self.intercept_ - float((self.mean_ / self.scale_) @ self.coef_)
        return (flat @ weights + offset).to(X.dtype)

    def state(self):
        if getattr(self, "members_", None):
            arrays, members = {}, []
            for m in self.members_:
                member_arrays, member_params = m.state()
                arrays.update({f"f{m.factor_}_{k}": v for k, v in member_arrays.items()})
                members.append({"factor": m.factor_, "intercept": member_params["intercept"],
                                "alpha": member_params["alpha"]})  # fmt:skip
            params = {"members": members}
        else:
            arrays, params = super().state()
            arrays["voxels"] = self.voxels_.astype(np.int64)
        params.update(
            factor=self.factor_,
            curve={str(k): v for k, v in self.curve_.items()},
            nuisance_components=int(getattr(self, "nuisance_components_", 0)),
            nuisance_use=self.nuisance_use,
            augmented_copies=int(getattr(self, "augmented_", 0)),
            copy_shift={str(k): v for k, v in getattr(self, "copy_shift_", {}).items()},
        )
        return arrays, params

    @classmethod
    def from_state(cls, arrays, params, threads: int = 1):
        if params.get("members"):
            model = cls(averaged_factors=tuple(int(m["factor"]) for m in params["members"]))
            model.members_ = [
                TissueLinear.from_state(
                    {k.split("_", 1)[1]: v for k, v in arrays.items()
                     if k.startswith(f"f{m['factor']}_")},
                    {"factor": m["factor"], "intercept": m["intercept"], "alpha": m["alpha"]})
                for m in params["members"]
            ]  # fmt:skip
            model.factor_ = int(params["factor"])
        else:
            model = super().from_state(arrays, params)
            model.voxels_, model.factor_ = arrays["voxels"], int(params["factor"])
            model.averaged_factors, model.members_ = (), []
        model.curve_ = {int(k): v for k, v in params.get("curve", {}).items()}
        model.nuisance_components_ = int(params.get("nuisance_components", 0))
        model.nuisance_use = params.get("nuisance_use", "project")
        model.augmented_ = int(params.get("augmented_copies", 0))
        model.copy_shift_ = {int(k): v for k, v in params.get("copy_shift", {}).items()}
        model.n_features_in_ = 2  # GM and WM channels
        return model
