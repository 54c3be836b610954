"""Site-aware cross-validation, learning curves and conformal intervals for any model kind.

Seed 000's central lesson: a random split lets a model recognise the scanner and its age range,
so accuracy is reported for a split by site *beside* the random split. Scans of one participant
always stay in the same fold.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut

from .metrics import accuracy_metrics, conformal_halfwidth, summarise_folds

COVERAGE = 0.9
LEARNING_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
NETWORK_LEARNING_FRACTIONS = (0.5, 1.0)  # each point is a full CNN cross-validation


def outer_folds(participants, sites, split: str, n_splits: int, seed: int):
    """Index pairs (train, test): by participant at random, or by site (leave-one-site-out
    up to 10 sites, else ``n_splits`` folds of whole sites).
    """
    participants, sites = np.asarray(participants), np.asarray(sites)
    index = np.arange(len(participants))
    if split == "random":
        splitter = GroupKFold(min(n_splits, len(set(participants))), shuffle=True,
                              random_state=seed)  # fmt:skip
        return list(splitter.split(index, groups=participants))
    if split == "site":
        if len(set(sites)) < 2:
            raise ValueError("a site split needs at least two sites")
        if len(set(sites)) <= 10:
            return list(LeaveOneGroupOut().split(index, groups=sites))
        return list(
            GroupKFold(n_splits, shuffle=True, random_state=seed).split(index, groups=sites)
        )
    raise ValueError(f"unknown split {split!r}")


def cross_validate(
    estimator,
    X,
    y,
    participants,
    sites,
    *,
    split: str,
    n_splits: int = 5,
    seed: int = 0,
    fractions=(1.0,),
    on_fold=None,
    nuisance=None,
) -> dict:
    """Out-of-fold predictions and per-fold metrics of clones of ``estimator``, fold k's
    seeded with ``seed + k``.

    ``fractions`` < 1 refit on a random part of each training fold (the learning curve); the
    test folds stay the same. Returns metrics summarised over folds, the pooled out-of-fold
    predictions, and the coverage of split-conformal intervals: each fold's half-width comes
    from the other folds' residuals only. ``on_fold(model, test)`` is called with every fold's
    full-size model (local models use it to collect their out-of-fold maps).
    ``nuisance = (differences, source participants)``: each fold's model learns only the
    copy − original differences of its own training participants (never a test scan's).
    """
    y = np.asarray(y, float)
    folds = outer_folds(participants, sites, split, n_splits, seed)
    rng = np.random.default_rng(seed)
    curve, oof = {}, None
    for fraction in sorted(fractions):
        predicted, fold_of = np.full(len(y), np.nan), np.full(len(y), -1)
        for k, (train, test) in enumerate(folds):
            if fraction < 1.0:
                train = np.sort(rng.choice(train, max(5, int(round(fraction * len(train)))),
                                           replace=False))  # fmt:skip
            model = clone(estimator).set_params(random_state=seed + k)
            model.fit(X[train], y[train], **fold_nuisance(nuisance, participants, train))
            predicted[test] = model.predict(X[test])
            fold_of[test] = k
            logging.getLogger("bids_brainage").info(
                "%s split, fold %d/%d (%d training scans): MAE %.2f years",
                split,
                k + 1,
                len(folds),
                len(train),
                float(np.mean(np.abs(predicted[test] - y[test]))),
            )
            if on_fold is not None and fraction == 1.0:
                on_fold(model, test)
        maes = [
            np.mean(np.abs(predicted[fold_of == k] - y[fold_of == k])) for k in range(len(folds))
        ]
        curve[str(fraction)] = {
            "training_size": int(round(fraction * np.mean([len(t) for t, _ in folds]))),
            "mae": float(np.mean(maes)),
            "mae_sd": float(np.std(maes, ddof=1)),
        }
        if fraction == 1.0:
            oof = (predicted, fold_of)
    return {**summarise_split(y, *oof, split), "learning_curve": curve}


def first_rows(participants) -> dict:
    """Each participant's first row (a nuisance copy is made from its source's first scan)."""
    return {pid: i for i, pid in reversed(list(enumerate(participants)))}


def fold_nuisance(nuisance, participants, train) -> dict:
    """The ``fit`` keywords of the nuisance differences whose source is in ``train``: the
    differences, and the row of ``X[train]`` each was made from (the source's first scan);
    none when no copy's source is in ``train``.
    """
    if nuisance is None:
        return {}
    differences, sources = nuisance
    training = np.asarray(participants)[train]
    keep = np.isin(np.asarray(sources), training)
    if not keep.any():  # no copy of this fold's training participants: train without copies
        return {}
    first = first_rows(training)
    rows = np.array([first[s] for s in np.asarray(sources)[keep]], dtype=int)
    return {"nuisance": differences[keep], "nuisance_rows": rows}


def summarise_split(y, predicted, fold_of, split: str) -> dict:
    """Metrics over the folds of out-of-fold predictions (each fold's baseline is the median age
    of the other folds, its training data), pooled metrics and interval coverage.
    """
    y, predicted, fold_of = (np.asarray(a) for a in (y, predicted, fold_of))
    folds = np.unique(fold_of)
    per_fold = [
        accuracy_metrics(y[fold_of == k], predicted[fold_of == k],
                         baseline_age=np.median(y[fold_of != k]))
        for k in folds
    ]  # fmt:skip
    return {
        "split": split,
        "folds": int(len(folds)),
        "metrics": summarise_folds(per_fold),
        "pooled": accuracy_metrics(y, predicted),
        "coverage": conformal_coverage(y, predicted, fold_of),
        "predicted": predicted,
        "fold": fold_of,
    }


def conformal_coverage(y, predicted, fold_of, coverage: float = COVERAGE) -> dict:
    """Empirical coverage of ±half-width intervals, each fold calibrated on the other folds."""
    residuals = np.asarray(predicted) - np.asarray(y)
    hits, widths = [], []
    for k in np.unique(fold_of):
        calibration = residuals[fold_of != k]
        halfwidth = conformal_halfwidth(calibration, coverage)
        widths.append(halfwidth)
        hits.extend(np.abs(residuals[fold_of == k]) <= halfwidth)
    return {
        "nominal": coverage,
        "empirical": float(np.mean(hits)),
        "mean_halfwidth": float(np.mean([w for w in widths if math.isfinite(w)])),
        "halfwidth_all_folds": conformal_halfwidth(residuals, coverage),
    }


def oof_table(scans: pd.DataFrame, results: dict[str, dict]) -> pd.DataFrame:
    """One row per scan and split: participant, site, age, fold and out-of-fold prediction."""
    frames = []
    for split, result in results.items():
        frame = scans[["participant_id", "session_id", "run", "site", "age"]].copy()
        frame.insert(0, "split", split)
        frame["fold"] = result["fold"]
        frame["predicted_age"] = result["predicted"]
        frame["brain_pad"] = frame["predicted_age"] - frame["age"]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
