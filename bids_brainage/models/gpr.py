"""Gaussian-process regression on a PCA of tissue maps (brainageR's recipe), a classical kind
that shares ``TissueLinear``'s block averaging and nested choice of the block size.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from .classical import _blocks, _check_fit, _check_predict, _in_brain, _torch_blocks, choose_factor

GPR_FACTORS = (2, 3, 4)  # 4, 6 and 8 mm blocks
PCA_VARIANCE = 0.99


class TissueGPR(RegressorMixin, BaseEstimator):
    """Gaussian-process regression on a PCA of GM and WM modulated maps (brainageR's recipe).

    Block-averaged maps (the factor chosen by inner CV, as for ``TissueLinear``) are
    standardised, reduced to the principal components that keep 99 % of the variance, and
    regressed with a GP whose kernel, an RBF plus a linear term plus noise, has its
    hyperparameters set by the marginal likelihood. The fitted state is plain arrays (training
    scores and dual weights), so prediction needs no scikit-learn object.
    """

    kind = "tissue-gpr"
    input = "tissue"
    role = "global"
    differentiable = True
    volume_input = True
    storage = "numpy"

    def __init__(self, factors=GPR_FACTORS, random_state=0):
        self.factors = factors
        self.random_state = random_state

    @classmethod
    def for_grid(cls, affine=None, *, settings=None, threads=2, random_state=0):
        return cls(random_state=random_state)

    def _scores(self, small):
        """Block-averaged maps (n, voxels inside the brains) → standardised PCA scores."""
        centred = (np.asarray(small, np.float64) - self.mean_) / self.scale_
        return (centred @ self.components_.T) / self.score_scale_

    def _fit_small(self, small, y, factor, volumes=True):
        from sklearn.decomposition import PCA
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, DotProduct, WhiteKernel

        self.factor_ = factor
        self.voxels_ = _in_brain(small, volumes)
        design = np.asarray(small[:, self.voxels_], np.float64)
        self.mean_, self.scale_ = design.mean(axis=0), design.std(axis=0)
        self.scale_[self.scale_ == 0] = 1.0
        pca = PCA(PCA_VARIANCE, svd_solver="full").fit((design - self.mean_) / self.scale_)
        self.components_ = pca.components_
        self.mean_ = self.mean_ + pca.mean_ * self.scale_  # fold PCA's centring into ours
        self.score_scale_ = np.ones(len(self.components_))
        scores = self._scores(design)
        self.score_scale_ = scores.std(axis=0)
        self.score_scale_[self.score_scale_ == 0] = 1.0
        scores = scores / self.score_scale_
        self.age_mean_, self.age_sd_ = float(np.mean(y)), float(np.std(y) or 1.0)
        kernel = (
            ConstantKernel() * RBF(length_scale=30.0, length_scale_bounds=(1.0, 1e4))
            + ConstantKernel() * DotProduct(sigma_0=1.0)
            + WhiteKernel()
        )
        gp = GaussianProcessRegressor(kernel, n_restarts_optimizer=2,
                                      random_state=self.random_state)  # fmt:skip
        with warnings.catch_warnings():  # hyperparameters at a bound are a fit, not an error
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(scores, (np.asarray(y, np.float64) - self.age_mean_) / self.age_sd_)
        fitted = gp.kernel_
        self.kernel_ = {
            "rbf_amplitude": float(fitted.k1.k1.k1.constant_value),
            "length_scale": float(fitted.k1.k1.k2.length_scale),
            "linear_amplitude": float(fitted.k1.k2.k1.constant_value),
            "sigma_0": float(fitted.k1.k2.k2.sigma_0),
            "noise": float(fitted.k2.noise_level),
        }
        self.train_scores_, self.dual_ = scores, np.asarray(gp.alpha_, np.float64)
        return self

    def _covariance(self, scores, xp=np):
        """Cross-covariance of ``scores`` with the training scores (no noise term)."""
        k, train = self.kernel_, xp.asarray(self.train_scores_)
        squared = ((scores**2).sum(1)[:, None] + (train**2).sum(1)[None, :]
                   - 2 * scores @ train.T)  # fmt:skip
        squared = xp.clip(squared, 0, None) if xp is np else squared.clamp(min=0)
        rbf = k["rbf_amplitude"] * xp.exp(-0.5 * squared / k["length_scale"] ** 2)
        return rbf + k["linear_amplitude"] * (k["sigma_0"] ** 2 + scores @ train.T)

    def _predict_small(self, small):
        scores = self._scores(np.asarray(small)[:, self.voxels_])
        return self._covariance(scores) @ self.dual_ * self.age_sd_ + self.age_mean_

    def fit(self, X, y):
        X, y = _check_fit(self, X, y)
        if X.ndim == 2:
            self.curve_ = {}
            return self._fit_small(X, y, 1, volumes=False)
        seed = self.random_state

        def inner_fit(small, ages, factor, _rows):
            model = TissueGPR((factor,), random_state=seed)
            return model._fit_small(small, ages, factor)._predict_small

        self.curve_, designs, best = choose_factor(X, y, self.factors, seed, inner_fit)
        return self._fit_small(designs[best], y, best)

    def predict(self, X):
        check_is_fitted(self)
        return self._predict_small(_blocks(_check_predict(self, X), self.factor_))

    def torch_predict(self, X):
        """``predict`` as a differentiable torch function of (N, 2, X, Y, Z) maps (U-noise)."""
        import torch

        flat = _torch_blocks(X, self.factor_, self.voxels_)
        as_tensor = {name: torch.as_tensor(getattr(self, f"{name}_")) for name in
                     ("mean", "scale", "components", "score_scale", "dual")}  # fmt:skip
        scores = ((flat - as_tensor["mean"]) / as_tensor["scale"]) @ as_tensor["components"].T
        scores = scores / as_tensor["score_scale"]
        age = self._covariance(scores, torch) @ as_tensor["dual"] * self.age_sd_ + self.age_mean_
        return age.to(X.dtype)

    ARRAYS = ("voxels", "mean", "scale", "components", "score_scale", "train_scores", "dual")

    def state(self):
        arrays = {name: np.asarray(getattr(self, f"{name}_")) for name in self.ARRAYS}
        arrays["voxels"] = arrays["voxels"].astype(np.int64)
        params = {"factor": self.factor_, "age_mean": self.age_mean_, "age_sd": self.age_sd_,
                  "kernel": self.kernel_,
                  "curve": {str(k): v for k, v in self.curve_.items()}}  # fmt:skip
        return arrays, params

    @classmethod
    def from_state(cls, arrays, params, threads: int = 1):
        model = cls()
        for name in cls.ARRAYS:
            setattr(model, f"{name}_", arrays[name])
        model.factor_, model.kernel_ = int(params["factor"]), dict(params["kernel"])
        model.age_mean_, model.age_sd_ = float(params["age_mean"]), float(params["age_sd"])
        model.curve_ = {int(k): v for k, v in params.get("curve", {}).items()}
        model.n_features_in_ = 2  # GM and WM channels
        return model
