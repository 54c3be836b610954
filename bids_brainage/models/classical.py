"""Seed 000's classical models: ridge and gradient boosting on the v2 histogram, ridge on
downsampled template-space tissue maps (the downsampling factor chosen by nested CV).

Each estimator keeps its fitted state as plain arrays plus JSON parameters, so a bundle can be
saved without pickle (``state``/``from_state``); gradient boosting is stored with skops.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
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


def choose_factor(X, y, factors, seed: int, inner_fit):
    """Inner-CV MAE of each block-averaging factor (seed 000's over/under-fitting curve).

    ``inner_fit(small, ages, factor)`` fits on block-averaged maps and returns a predictor of
    held-out block-averaged maps. Returns the curve, the block averages of every factor
    (computed once per scan, then sliced for each fold) and the best factor.
    """
    X, y = np.asarray(X, np.float32), np.asarray(y, np.float64)
    inner = KFold(min(INNER_FOLDS, len(y)), shuffle=True, random_state=seed)
    curve, designs = {}, {}
    for factor in factors:
        small = designs[factor] = block_average(X, factor).reshape(len(X), -1)
        errors = []
        for train, test in inner.split(small):
            predict = inner_fit(small[train], y[train], factor)
            errors.append(np.abs(predict(small[test]) - y[test]))
        curve[factor] = float(np.mean(np.concatenate(errors)))
    return curve, designs, min(curve, key=curve.get)


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
        def inner_fit(small, ages, factor):
            model = TissueLinear((factor,))._fit_small(small, ages, factor)
            return lambda test: model.predict(test[:, model.voxels])

        self.curve, designs, best = choose_factor(X, y, self.factors, seed, inner_fit)
        return self._fit_small(designs[best], np.asarray(y, np.float64), best)

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


GPR_FACTORS = (2, 3, 4)  # 4, 6 and 8 mm blocks
PCA_VARIANCE = 0.99


class TissueGPR:
    """Gaussian-process regression on a PCA of GM and WM modulated maps (brainageR's recipe).

    Block-averaged maps (the factor chosen by inner CV, as for ``TissueLinear``) are
    standardised, reduced to the principal components that keep 99 % of the variance, and
    regressed with a GP whose kernel, an RBF plus a linear term plus noise, has its
    hyperparameters set by the marginal likelihood. The fitted state is plain arrays (training
    scores and dual weights), so prediction needs no scikit-learn object.
    """

    kind = "tissue-gpr"
    input = "tissue"

    def __init__(self, factors=GPR_FACTORS):
        self.factors = tuple(factors)
        self.factor = self.voxels = None
        self.mean = self.scale = self.components = self.score_scale = None
        self.train_scores = self.dual = None
        self.age_mean, self.age_sd, self.kernel, self.curve = 0.0, 1.0, {}, {}

    def _scores(self, small):
        """Block-averaged maps (n, voxels inside the brains) → standardised PCA scores."""
        centred = (np.asarray(small, np.float64) - self.mean) / self.scale
        return (centred @ self.components.T) / self.score_scale

    def _fit_small(self, small, y, factor, seed):
        from sklearn.decomposition import PCA
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, DotProduct, WhiteKernel

        self.factor = factor
        self.voxels = np.flatnonzero(small.mean(axis=0) > 0.01)
        design = np.asarray(small[:, self.voxels], np.float64)
        self.mean, self.scale = design.mean(axis=0), design.std(axis=0)
        self.scale[self.scale == 0] = 1.0
        pca = PCA(PCA_VARIANCE, svd_solver="full").fit((design - self.mean) / self.scale)
        self.components = pca.components_
        self.mean = self.mean + pca.mean_ * self.scale  # fold PCA's centring into ours
        self.score_scale = np.ones(len(self.components))
        scores = self._scores(design)
        self.score_scale = scores.std(axis=0)
        self.score_scale[self.score_scale == 0] = 1.0
        scores = scores / self.score_scale
        self.age_mean, self.age_sd = float(np.mean(y)), float(np.std(y) or 1.0)
        kernel = (
            ConstantKernel() * RBF(length_scale=30.0, length_scale_bounds=(1.0, 1e4))
            + ConstantKernel() * DotProduct(sigma_0=1.0)
            + WhiteKernel()
        )
        gp = GaussianProcessRegressor(kernel, n_restarts_optimizer=2, random_state=seed)
        with warnings.catch_warnings():  # hyperparameters at a bound are a fit, not an error
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(scores, (np.asarray(y, np.float64) - self.age_mean) / self.age_sd)
        fitted = gp.kernel_
        self.kernel = {
            "rbf_amplitude": float(fitted.k1.k1.k1.constant_value),
            "length_scale": float(fitted.k1.k1.k2.length_scale),
            "linear_amplitude": float(fitted.k1.k2.k1.constant_value),
            "sigma_0": float(fitted.k1.k2.k2.sigma_0),
            "noise": float(fitted.k2.noise_level),
        }
        self.train_scores, self.dual = scores, np.asarray(gp.alpha_, np.float64)
        return self

    def _covariance(self, scores, xp=np):
        """Cross-covariance of ``scores`` with the training scores (no noise term)."""
        k, train = self.kernel, xp.asarray(self.train_scores)
        squared = ((scores**2).sum(1)[:, None] + (train**2).sum(1)[None, :]
                   - 2 * scores @ train.T)  # fmt:skip
        squared = xp.clip(squared, 0, None) if xp is np else squared.clamp(min=0)
        rbf = k["rbf_amplitude"] * xp.exp(-0.5 * squared / k["length_scale"] ** 2)
        return rbf + k["linear_amplitude"] * (k["sigma_0"] ** 2 + scores @ train.T)

    def _predict_small(self, small):
        scores = self._scores(np.asarray(small)[:, self.voxels])
        return self._covariance(scores) @ self.dual * self.age_sd + self.age_mean

    def fit(self, X, y, *, seed: int = 0):
        def inner_fit(small, ages, factor):
            return TissueGPR((factor,))._fit_small(small, ages, factor, seed)._predict_small

        self.curve, designs, best = choose_factor(X, y, self.factors, seed, inner_fit)
        return self._fit_small(designs[best], np.asarray(y, np.float64), best, seed)

    def predict(self, X):
        X = np.asarray(X, np.float32)
        return self._predict_small(block_average(X, self.factor).reshape(len(X), -1))

    def torch_predict(self, X):
        """``predict`` as a differentiable torch function of (N, 2, X, Y, Z) maps (U-noise)."""
        import torch
        from torch.nn import functional as F

        pad = [p for s in reversed(X.shape[-3:]) for p in (0, (-s) % self.factor)]
        small = F.avg_pool3d(F.pad(X, pad), self.factor) if self.factor > 1 else X
        flat = small.reshape(len(X), -1)[:, torch.as_tensor(self.voxels)].to(torch.float64)
        as_tensor = {name: torch.as_tensor(getattr(self, name)) for name in
                     ("mean", "scale", "components", "score_scale", "dual")}  # fmt:skip
        scores = ((flat - as_tensor["mean"]) / as_tensor["scale"]) @ as_tensor["components"].T
        scores = scores / as_tensor["score_scale"]
        age = self._covariance(scores, torch) @ as_tensor["dual"] * self.age_sd + self.age_mean
        return age.to(X.dtype)

    ARRAYS = ("voxels", "mean", "scale", "components", "score_scale", "train_scores", "dual")

    def state(self):
        arrays = {name: np.asarray(getattr(self, name)) for name in self.ARRAYS}
        arrays["voxels"] = arrays["voxels"].astype(np.int64)
        params = {"factor": self.factor, "age_mean": self.age_mean, "age_sd": self.age_sd,
                  "kernel": self.kernel,
                  "curve": {str(k): v for k, v in self.curve.items()}}  # fmt:skip
        return arrays, params

    @classmethod
    def from_state(cls, arrays, params):
        model = cls()
        for name in cls.ARRAYS:
            setattr(model, name, arrays[name])
        model.factor, model.kernel = int(params["factor"]), dict(params["kernel"])
        model.age_mean, model.age_sd = float(params["age_mean"]), float(params["age_sd"])
        model.curve = {int(k): v for k, v in params.get("curve", {}).items()}
        return model
