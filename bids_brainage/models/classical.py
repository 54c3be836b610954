"""Seed 000's classical models: ridge and gradient boosting on the v2 histogram, ridge on
downsampled template-space tissue maps (the downsampling factor chosen by nested CV).

Each estimator keeps its fitted state as plain arrays plus JSON parameters, so a bundle can be
saved without pickle (``state``/``from_state``); gradient boosting is stored with skops.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import GridSearchCV, KFold

RIDGE_ALPHAS = tuple(10.0**k for k in range(-2, 7))
TISSUE_FACTORS = (2, 3, 4, 6, 8)  # of the 2 mm grid: 4 to 16 mm voxels
INNER_FOLDS = 5


class LinearAgeModel:
    """Standardised features -> ridge, the penalty chosen by efficient leave-one-out (RidgeCV)."""

    input = "histogram"

    def __init__(self):
        self.mean = self.scale = self.coef = None
        self.intercept = 0.0
        self.alpha = None

    def _design(self, X):
        return np.asarray(X, np.float64).reshape(len(X), -1)

    def fit(self, X, y, *, seed: int = 0):
        X = self._design(X)
        self.mean = X.mean(axis=0)
        self.scale = X.std(axis=0)
        self.scale[self.scale == 0] = 1.0
        ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit((X - self.mean) / self.scale, y)
        self.coef, self.intercept, self.alpha = ridge.coef_, float(ridge.intercept_), ridge.alpha_
        return self

    def predict(self, X):
        return ((self._design(X) - self.mean) / self.scale) @ self.coef + self.intercept

    def state(self) -> tuple[dict, dict]:
        arrays = {"mean": self.mean, "scale": self.scale, "coef": self.coef}
        return arrays, {"intercept": self.intercept, "alpha": self.alpha}

    @classmethod
    def from_state(cls, arrays: dict, params: dict):
        model = cls()
        model.mean, model.scale, model.coef = arrays["mean"], arrays["scale"], arrays["coef"]
        model.intercept, model.alpha = params["intercept"], params["alpha"]
        return model


class HistogramLinear(LinearAgeModel):
    """Seed 000's first model: a linear model on the 200-bin v2 histogram."""

    kind = "hist-linear"


class HistogramBoosting:
    """Gradient-boosted trees on the histogram (absolute-error loss, 150 trees of 7 leaves), the
    learning rate chosen by a 3-fold inner CV (kept small: boosting is the slowest classical
    kind).
    """

    kind = "hist-gbm"
    input = "histogram"
    grid = {"learning_rate": [0.05, 0.15]}

    def __init__(self):
        self.model = None
        self.best = None

    def fit(self, X, y, *, seed: int = 0):
        search = GridSearchCV(
            HistGradientBoostingRegressor(
                loss="absolute_error", max_iter=150, max_leaf_nodes=7, early_stopping=False,
                min_samples_leaf=5, random_state=seed),
            self.grid,
            cv=KFold(3, shuffle=True, random_state=seed),
            scoring="neg_mean_absolute_error",
        )  # fmt:skip
        search.fit(np.asarray(X, np.float64), y)
        self.model, self.best = search.best_estimator_, search.best_params_
        return self

    def predict(self, X):
        return self.model.predict(np.asarray(X, np.float64))

    def to_skops(self) -> bytes:
        import skops.io as sio

        return sio.dumps(self.model)

    @classmethod
    def from_skops(cls, data: bytes, params: dict):
        import skops.io as sio

        allowed = {"sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"}
        untrusted = set(sio.get_untrusted_types(data=data))
        if untrusted - allowed:
            raise ValueError(f"skops file holds unexpected types {sorted(untrusted - allowed)}")
        model = cls()
        model.model = sio.loads(data, trusted=sorted(untrusted))
        if not isinstance(model.model, HistGradientBoostingRegressor):
            raise ValueError("skops file does not hold a HistGradientBoostingRegressor")
        model.best = params.get("best")
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


class TissueLinear(LinearAgeModel):
    """Ridge on GM and WM modulated maps block-averaged by a factor chosen by inner CV.

    Seed 000: too little downsampling over-fits, too much under-fits; the inner-CV MAE of every
    factor is kept (``curve``) to show that curve.
    """

    kind = "tissue-linear"
    input = "tissue"

    def __init__(self, factors=TISSUE_FACTORS):
        super().__init__()
        self.factors = tuple(factors)
        self.factor = None
        self.voxels = None  # flat indices of the downsampled voxels inside the training brains
        self.curve = {}

    def _design(self, X):
        X = np.asarray(X, np.float32)
        if X.ndim == 2:  # already a design matrix
            return X.astype(np.float64)
        small = block_average(X, self.factor).reshape(len(X), -1)
        return small[:, self.voxels].astype(np.float64)

    def _fit_small(self, small, y, factor):
        """Fit on block-averaged maps (n, voxels); keep the voxels inside the brains."""
        self.factor = factor
        self.voxels = np.flatnonzero(small.mean(axis=0) > 0.01)
        return LinearAgeModel.fit(self, small[:, self.voxels], y)

    def fit(self, X, y, *, seed: int = 0):
        X, y = np.asarray(X, np.float32), np.asarray(y, np.float64)
        inner = KFold(min(INNER_FOLDS, len(y)), shuffle=True, random_state=seed)
        self.curve, designs = {}, {}
        for factor in self.factors:
            # block averages are per scan: computed once, then sliced for each inner fold
            small = designs[factor] = block_average(X, factor).reshape(len(X), -1)
            errors = []
            for train, test in inner.split(small):
                model = TissueLinear((factor,))._fit_small(small[train], y[train], factor)
                errors.append(np.abs(model.predict(small[test][:, model.voxels]) - y[test]))
            self.curve[factor] = float(np.mean(np.concatenate(errors)))
        best = min(self.curve, key=self.curve.get)
        return self._fit_small(designs[best], y, best)

    def torch_predict(self, X):
        """``predict`` as a differentiable torch function of (N, 2, X, Y, Z) maps (U-noise)."""
        import torch
        from torch.nn import functional as F

        pad = [p for s in reversed(X.shape[-3:]) for p in (0, (-s) % self.factor)]
        small = F.avg_pool3d(F.pad(X, pad), self.factor) if self.factor > 1 else X
        flat = small.reshape(len(X), -1)[:, torch.as_tensor(self.voxels)].to(torch.float64)
        weights = torch.as_tensor(self.coef / self.scale)
        offset = self.intercept - float((self.mean / self.scale) @ self.coef)
        return (flat @ weights + offset).to(X.dtype)

    def state(self):
        arrays, params = super().state()
        arrays["voxels"] = self.voxels.astype(np.int64)
        params.update(factor=self.factor, curve={str(k): v for k, v in self.curve.items()})
        return arrays, params

    @classmethod
    def from_state(cls, arrays, params):
        model = super().from_state(arrays, params)
        model.voxels, model.factor = arrays["voxels"], int(params["factor"])
        model.curve = {int(k): v for k, v in params.get("curve", {}).items()}
        return model
