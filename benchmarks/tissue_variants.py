"""Random-split CV MAE of variants of the tissue-linear model, to see what moves the error.

    python benchmarks/tissue_variants.py BIDS_DIR DERIVATIVES [--repeats 3]

DERIVATIVES holds participant-level outputs of BIDS_DIR (e.g. the IXI run of
``scripts/train_default_bundle.py``). Every variant is scored by the same repeated 5-fold
random split (seed 20181209): mean ± SD over repeats of the pooled out-of-fold MAE. Each
variant's hyperparameters are chosen inside the training folds only. Prints a Markdown table
for docs/benchmarks.md. Variants change one thing at a time from the shipped model (ridge on GM
and WM modulated maps, 8 mm blocks): the resolution, the tissues, smoothing, the learner, the
input, mirrored training copies, a calibration of the output, and a stack of inputs; then what
the literature uses at this sample size: Gaussian-process regression (brainageR) and kernel ridge
on a PCA of smoothed tissue maps, and their average with the ridge.
The demo's source scans (``bids_brainage/data/demo/sources.tsv``) are left out, as in training.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.cross_decomposition import PLSRegression
from sklearn.decomposition import PCA
from sklearn.ensemble import StackingRegressor, VotingRegressor
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, DotProduct, WhiteKernel
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LinearRegression, RidgeCV
from sklearn.model_selection import GridSearchCV, KFold, RepeatedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from bids_brainage.models.classical import RIDGE_ALPHAS, block_average
from bids_brainage.models.inputs import ScanFeatures, read_histogram, read_map
from bids_brainage.utils.derivatives import derivative_path

SEED = 20181209
DEMO_SOURCES = Path(__file__).resolve().parents[1] / "bids_brainage/data/demo/sources.tsv"


class InsideBrains(BaseEstimator, TransformerMixin):
    """Keep the voxels whose mean over the training scans exceeds 0.01, as TissueLinear does:
    scaling near-empty voxels to unit variance would blow up their noise."""

    def fit(self, X, y=None):
        self.keep_ = np.asarray(X).mean(axis=0) > 0.01
        return self

    def transform(self, X):
        return np.asarray(X)[:, self.keep_]


def ridge(maps: bool = True):
    steps = [InsideBrains()] if maps else []
    return make_pipeline(*steps, StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS))


class Mirrored(BaseEstimator, RegressorMixin):
    """Fit on every scan and its left-right mirror image; predict the mean of both.

    Rows are [design of the maps | design of the mirrored maps], built before the split.
    """

    def __init__(self, estimator=None):
        self.estimator = estimator

    def fit(self, X, y):
        half = X.shape[1] // 2
        self.model_ = clone(self.estimator).fit(
            np.concatenate([X[:, :half], X[:, half:]]), np.concatenate([y, y]))  # fmt:skip
        return self

    def predict(self, X):
        half = X.shape[1] // 2
        return (self.model_.predict(X[:, :half]) + self.model_.predict(X[:, half:])) / 2


def gpr(kernel: str):
    """brainageR's recipe: PCA of the maps (components keeping 99 % of the variance), then a GP
    whose kernel hyperparameters maximise the marginal likelihood (no inner CV needed)."""
    kernels = {
        "linear": ConstantKernel() * DotProduct(sigma_0=1.0) + WhiteKernel(),
        "rbf": ConstantKernel() * RBF(length_scale=30.0, length_scale_bounds=(1.0, 1e4))
        + WhiteKernel(),
        "rbf+linear": ConstantKernel() * RBF(length_scale=30.0, length_scale_bounds=(1.0, 1e4))
        + ConstantKernel() * DotProduct(sigma_0=1.0)
        + WhiteKernel(),
    }
    return make_pipeline(
        InsideBrains(), StandardScaler(), PCA(0.99, svd_solver="full"), StandardScaler(),
        GaussianProcessRegressor(kernels[kernel], normalize_y=True, n_restarts_optimizer=2,
                                 random_state=0))  # fmt:skip


def kernel_ridge():
    """RBF kernel ridge on PCA scores, penalty and width by inner CV."""
    return GridSearchCV(
        make_pipeline(InsideBrains(), StandardScaler(), PCA(0.99, svd_solver="full"),
                      StandardScaler(), KernelRidge(kernel="rbf")),
        {"kernelridge__alpha": [0.01, 0.1, 1.0], "kernelridge__gamma": [1e-4, 3e-4, 1e-3, 3e-3]},
        cv=KFold(5, shuffle=True, random_state=0), scoring="neg_mean_absolute_error",
    )  # fmt:skip


class Centred(BaseEstimator, RegressorMixin):
    """Fit on centred ages (kernel ridge has no intercept)."""

    def __init__(self, estimator=None):
        self.estimator = estimator

    def fit(self, X, y):
        self.mean_ = float(np.mean(y))
        self.model_ = clone(self.estimator).fit(X, np.asarray(y) - self.mean_)
        return self

    def predict(self, X):
        return np.ravel(self.model_.predict(X)) + self.mean_


def columns(estimator, block: slice):
    """``estimator`` on one block of columns of a concatenated design."""
    return make_pipeline(ColumnTransformer([("block", "passthrough", block)]), estimator)


def load(bids_dir: Path, derivatives: Path, exclude=()):
    """Ages and every scan's inputs: GM, WM, CSF modulated maps, v2 T1w, histogram, volumes."""
    table = pd.read_csv(bids_dir / "participants.tsv", sep="\t", na_values=["n/a"])
    table = table[~table["participant_id"].isin(set(exclude))]
    table["age"] = pd.to_numeric(table["age"], errors="coerce")
    ages, maps, t1w, histograms, volumes = [], [], [], [], []
    space = resolution = None
    for participant, age in zip(table.participant_id, table.age, strict=True):
        if not np.isfinite(age):
            continue
        subject = participant.removeprefix("sub-")
        if space is None:  # the template and grid of the first scan's maps
            anat = derivatives / participant / "anat"
            first = next(anat.glob("*_space-*_label-GM_*probseg.nii.gz"))
            space = first.name.split("space-")[1].split("_")[0]
            resolution = first.name.split("res-")[1].split("_")[0]
        features = ScanFeatures.from_derivatives(
            derivatives, {"subject": subject}, space, resolution
        )
        csf = derivatives / derivative_path(
            {"subject": subject, "space": space, "resolution": resolution, "label": "CSF",
             "desc": "modulated", "suffix": "probseg", "extension": ".nii.gz"})  # fmt:skip
        volume_file = derivatives / derivative_path(
            {"subject": subject, "desc": "volumes", "suffix": "features", "extension": ".tsv"}
        )
        if features.missing("tissue") or features.missing("t1w") or not csf.exists():
            continue
        maps.append(np.stack([read_map(p) for p in (*features.tissue.values(), csf)]))
        t1w.append(read_map(features.t1w))
        histograms.append(read_histogram(features.histogram))
        volumes.append(pd.read_csv(volume_file, sep="\t").iloc[0])
        ages.append(age)
    volumes = pd.DataFrame(volumes)[["csf_ml", "gm_ml", "wm_ml", "tiv_ml", "csf_fraction",
                                     "gm_fraction", "wm_fraction"]]  # fmt:skip
    return (np.asarray(ages), np.stack(maps), np.stack(t1w)[:, None], np.stack(histograms),
            volumes.to_numpy(float))  # fmt:skip


def flat(maps, factor):
    return block_average(maps, factor).reshape(len(maps), -1)


def variants(maps, t1w, histograms, volumes):
    """(name, design, estimator) for every variant; designs are built once, before any split."""
    gm_wm = maps[:, :2]
    mirror = maps[:, :2, ::-1]  # the MNI grids are centred on x = 0
    tiv = (volumes[:, 3] / volumes[:, 3].mean())[:, None, None, None, None]  # relative TIV
    smooth = np.stack([gaussian_filter(m, (0, 1, 1, 1)) for m in gm_wm])  # σ = 2 mm
    f4, csf4 = flat(gm_wm, 4), flat(maps[:, 2:], 4)
    yield "GM + WM, 4 mm blocks", flat(gm_wm, 2), ridge()
    yield "GM + WM, 6 mm blocks", flat(gm_wm, 3), ridge()
    yield "**GM + WM, 8 mm blocks (the default bundle's chosen factor)**", f4, ridge()
    yield "GM + WM, 12 mm blocks", flat(gm_wm, 6), ridge()
    yield "GM only, 8 mm", flat(maps[:, :1], 4), ridge()
    yield "GM + WM + CSF, 8 mm", flat(maps, 4), ridge()
    yield "GM + WM ÷ relative TIV, 8 mm", flat(gm_wm / tiv, 4), ridge()
    yield "GM + WM smoothed (σ 2 mm), 4 mm blocks", flat(smooth, 2), ridge()
    yield "v2 T1w intensities, 8 mm", flat(t1w, 4), ridge()
    yield "histogram (200 bins), ridge", histograms, ridge(maps=False)
    yield "tissue volumes and fractions, OLS", volumes, LinearRegression()
    yield "GM + WM 8 mm, PLS (components by inner CV)", f4, GridSearchCV(
        make_pipeline(InsideBrains(), StandardScaler(), PLSRegression(scale=False)),
        {"plsregression__n_components": [2, 4, 8, 12]}, cv=KFold(5, shuffle=True, random_state=0),
        scoring="neg_mean_absolute_error")  # fmt:skip
    yield "GM + WM 8 mm, linear SVR (C by inner CV)", f4, GridSearchCV(
        make_pipeline(InsideBrains(), StandardScaler(), SVR(kernel="linear", epsilon=1.0)),
        {"svr__C": [1e-4, 1e-3, 1e-2]}, cv=KFold(5, shuffle=True, random_state=0),
        scoring="neg_mean_absolute_error")  # fmt:skip
    yield (
        "GM + WM 6 mm, + mirrored copies",
        np.hstack([flat(gm_wm, 3), flat(mirror, 3)]),
        Mirrored(ridge()),
    )
    yield "GM + WM 8 mm, + mirrored copies", np.hstack([f4, flat(mirror, 4)]), Mirrored(ridge())
    yield (
        "GM + WM 8 mm, output calibrated on inner-CV predictions",
        f4,
        StackingRegressor(
            [("tissue", ridge())], LinearRegression(), cv=KFold(5, shuffle=True, random_state=0)
        ),
    )
    design = np.hstack([f4, csf4, volumes])
    blocks = np.cumsum([0, f4.shape[1], csf4.shape[1], volumes.shape[1]])
    yield "stack: GM + WM 8 mm, CSF 8 mm, volumes (weights ≥ 0 by inner CV)", design, \
        StackingRegressor(
            [("gm_wm", columns(ridge(), slice(blocks[0], blocks[1]))),
             ("csf", columns(ridge(), slice(blocks[1], blocks[2]))),
             ("volumes", columns(LinearRegression(), slice(blocks[2], blocks[3])))],
            LinearRegression(positive=True), cv=KFold(5, shuffle=True, random_state=0))  # fmt:skip
    smooth_all = np.stack([gaussian_filter(m, (0, 1, 1, 1)) for m in maps])  # GM, WM, CSF
    s4 = flat(smooth_all, 2)
    yield "GPR, linear kernel, PCA of smoothed GM + WM + CSF 4 mm", s4, gpr("linear")
    yield "GPR, RBF kernel, PCA of smoothed GM + WM + CSF 4 mm", s4, gpr("rbf")
    yield "GPR, RBF + linear kernel, PCA of smoothed GM + WM + CSF 4 mm", s4, gpr("rbf+linear")
    yield "GPR, RBF + linear kernel, PCA of GM + WM 8 mm", f4, gpr("rbf+linear")
    yield (
        "GPR, RBF + linear kernel, PCA of smoothed GM + WM 4 mm",
        flat(smooth, 2),
        gpr("rbf+linear"),
    )
    yield "GPR, linear kernel, PCA of smoothed GM + WM 4 mm", flat(smooth, 2), gpr("linear")
    yield "kernel ridge (RBF), PCA of smoothed GM + WM + CSF 4 mm", s4, Centred(kernel_ridge())
    design = np.hstack([f4, s4])
    yield "average: ridge GM + WM 8 mm and GPR RBF + linear 4 mm", design, VotingRegressor(
        [("ridge", columns(ridge(), slice(0, f4.shape[1]))),
         ("gpr", columns(gpr("rbf+linear"), slice(f4.shape[1], design.shape[1])))])  # fmt:skip


def score(design, estimator, ages, repeats):
    maes = []
    splits = list(RepeatedKFold(n_splits=5, n_repeats=repeats, random_state=SEED).split(ages))
    for r in range(repeats):
        predicted = np.empty_like(ages)
        for train, test in splits[5 * r : 5 * r + 5]:
            model = clone(estimator).fit(design[train], ages[train])
            predicted[test] = np.ravel(model.predict(design[test]))
        maes.append(np.abs(predicted - ages).mean())
    return float(np.mean(maes)), float(np.std(maes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("derivatives", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help="run only the variants whose name contains this text")
    parser.add_argument(
        "--keep-demo",
        action="store_true",
        help="keep the demo's source scans (left out by default, as in training)",
    )
    args = parser.parse_args()
    exclude = () if args.keep_demo else pd.read_csv(DEMO_SOURCES, sep="\t")["source"]
    ages, maps, t1w, histograms, volumes = load(args.bids_dir, args.derivatives, exclude)
    splits = RepeatedKFold(n_splits=5, n_repeats=args.repeats, random_state=SEED).split(ages)
    baseline = np.concatenate([np.abs(np.median(ages[tr]) - ages[te]) for tr, te in splits])
    print(f"{len(ages)} scans with an age; median-age baseline MAE "
          f"{baseline.mean():.2f} years\n")  # fmt:skip
    print("| variant | MAE (years), mean ± SD over repeats | time (s) |")
    print("|---|---|---|")
    for name, design, estimator in variants(maps, t1w, histograms, volumes):
        if args.only and args.only not in name:
            continue
        start = time.perf_counter()
        mean, sd = score(design, estimator, ages, args.repeats)
        print(
            f"| {name} | {mean:.2f} ± {sd:.2f} | {time.perf_counter() - start:.0f} |", flush=True
        )


if __name__ == "__main__":
    main()
