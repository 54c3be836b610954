"""Group comparisons (seed 002 §2.3, seed 000's Alzheimer's analysis) on one value per scan.

scipy computes Welch's t, its Welch-Satterthwaite df and p; statsmodels the Bonferroni and
Benjamini-Hochberg corrections; scikit-learn the ROC-AUC. Cohen's d, ICC(2,1) and the
Bland-Altman limits are a few lines each and are checked in the tests against scipy's pooled
t, an ANOVA from statsmodels and Shrout & Fleiss (1979)'s worked example.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score
from statsmodels.stats.multitest import multipletests

CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 2000


def _clean(values) -> np.ndarray:
    values = np.asarray(values, float)
    return values[np.isfinite(values)]


def cohens_d(first, second) -> float:
    """(mean1 - mean2) / pooled SD, pooled SD = sqrt(((n1-1) var1 + (n2-1) var2) / (n1+n2-2)).

    Seed 002's Eq. 3 with its s_k read as the unbiased variances (the seed says "s_k represents
    the variance"), i.e. the classic pooled standard deviation.
    """
    first, second = _clean(first), _clean(second)
    n1, n2 = len(first), len(second)
    if n1 < 2 or n2 < 2:
        return math.nan
    pooled = ((n1 - 1) * first.var(ddof=1) + (n2 - 1) * second.var(ddof=1)) / (n1 + n2 - 2)
    return float((first.mean() - second.mean()) / math.sqrt(pooled)) if pooled > 0 else math.nan


def welch_test(first, second) -> dict:
    """Welch's t (seed 002 Eq. 1), Welch-Satterthwaite df (Eq. 2), two-sided p, Cohen's d."""
    first, second = _clean(first), _clean(second)
    row = {
        "n1": len(first), "n2": len(second),
        "mean1": first.mean() if len(first) else math.nan,
        "mean2": second.mean() if len(second) else math.nan,
        "sd1": first.std(ddof=1) if len(first) > 1 else math.nan,
        "sd2": second.std(ddof=1) if len(second) > 1 else math.nan,
        "t": math.nan, "df": math.nan, "p": math.nan, "cohens_d": cohens_d(first, second),
    }  # fmt:skip
    if len(first) >= 2 and len(second) >= 2 and (np.ptp(first) > 0 or np.ptp(second) > 0):
        result = stats.ttest_ind(first, second, equal_var=False)
        row.update(t=float(result.statistic), df=float(result.df), p=float(result.pvalue))
    low, high = math.nan, math.nan
    if math.isfinite(row["df"]):
        scale = math.sqrt(row["sd1"] ** 2 / row["n1"] + row["sd2"] ** 2 / row["n2"])
        difference = row["mean1"] - row["mean2"]
        low, high = stats.t.interval(CONFIDENCE, row["df"], loc=difference, scale=scale)
    row.update(difference=row["mean1"] - row["mean2"], difference_ci_low=low,
               difference_ci_high=high)  # fmt:skip
    return {k: float(v) if not isinstance(v, int) else v for k, v in row.items()}


def adjust_pvalues(pvalues) -> tuple[np.ndarray, np.ndarray]:
    """Bonferroni and Benjamini-Hochberg FDR adjusted p-values (NaNs stay NaN)."""
    pvalues = np.asarray(pvalues, float)
    bonferroni, fdr = np.full_like(pvalues, np.nan), np.full_like(pvalues, np.nan)
    finite = np.isfinite(pvalues)
    if finite.any():
        bonferroni[finite] = multipletests(pvalues[finite], method="bonferroni")[1]
        fdr[finite] = multipletests(pvalues[finite], method="fdr_bh")[1]
    return bonferroni, fdr


def compare_groups(values: pd.Series, groups: pd.Series, order=None) -> pd.DataFrame:
    """Welch's t and Cohen's d for every pair of groups, with Bonferroni and FDR over the pairs."""
    order = list(order) if order is not None else sorted(groups.dropna().unique(), key=str)
    rows = []
    for first, second in itertools.combinations(order, 2):
        result = welch_test(values[groups == first], values[groups == second])
        rows.append({"group1": first, "group2": second, **result})
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p_bonferroni"], table["p_fdr"] = adjust_pvalues(table["p"])
    return table


def roc_auc(patients, controls, n_boot: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
    """ROC-AUC of a score (brain-PAD) for patients against controls, percentile bootstrap CI.

    Resamples patients and controls separately, so every replicate has both classes.
    """
    patients, controls = _clean(patients), _clean(controls)
    row = {"n_patients": len(patients), "n_controls": len(controls), "auc": math.nan,
           "auc_ci_low": math.nan, "auc_ci_high": math.nan}  # fmt:skip
    if not len(patients) or not len(controls):
        return row
    labels = np.r_[np.ones(len(patients)), np.zeros(len(controls))]
    row["auc"] = float(roc_auc_score(labels, np.r_[patients, controls]))
    rng = np.random.default_rng(seed)
    resampled = np.array([np.r_[rng.choice(patients, len(patients)),
                                rng.choice(controls, len(controls))]
                          for _ in range(n_boot)])  # fmt:skip
    boots = _auc_by_ranks(resampled, len(patients))
    tail = (1 - CONFIDENCE) / 2 * 100
    row["auc_ci_low"], row["auc_ci_high"] = map(float, np.percentile(boots, [tail, 100 - tail]))
    return row


def _auc_by_ranks(scores: np.ndarray, n_patients: int) -> np.ndarray:
    """ROC-AUC of each row (patients first) by the Mann-Whitney rank sum, ties counting half:
    the value roc_auc_score gives, for thousands of bootstrap rows at once.
    """
    ranks = stats.rankdata(scores, axis=1)
    n_controls = scores.shape[1] - n_patients
    rank_sum = ranks[:, :n_patients].sum(axis=1)
    return (rank_sum - n_patients * (n_patients + 1) / 2) / (n_patients * n_controls)


def roc_curve_points(patients, controls) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    patients, controls = _clean(patients), _clean(controls)
    labels = np.r_[np.ones(len(patients)), np.zeros(len(controls))]
    fpr, tpr, _ = roc_curve(labels, np.r_[patients, controls])
    return fpr, tpr


def anova_mean_squares(ratings) -> tuple[float, float, float]:
    """Two-way ANOVA without replication: mean squares of targets, raters and error."""
    ratings = np.asarray(ratings, float)
    n, k = ratings.shape
    grand = ratings.mean()
    ss_targets = k * ((ratings.mean(axis=1) - grand) ** 2).sum()
    ss_raters = n * ((ratings.mean(axis=0) - grand) ** 2).sum()
    ss_error = ((ratings - grand) ** 2).sum() - ss_targets - ss_raters
    return ss_targets / (n - 1), ss_raters / (k - 1), ss_error / ((n - 1) * (k - 1))


def icc_2_1_from_mean_squares(bms, jms, ems, n: int, k: int):
    """ICC(2,1), Shrout & Fleiss (1979): two-way random effects, absolute agreement, single."""
    return (bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n)


def icc_2_1(ratings) -> dict:
    """ICC(2,1) of an n targets x k raters array, with the F-based 95 % CI of McGraw & Wong
    (1996, Table 7), as Shrout & Fleiss give it for case 2.
    """
    ratings = np.asarray(ratings, float)
    ratings = ratings[np.isfinite(ratings).all(axis=1)]
    n, k = ratings.shape
    row = {"n_targets": int(n), "n_raters": int(k), "icc": math.nan, "icc_ci_low": math.nan,
           "icc_ci_high": math.nan}  # fmt:skip
    if n < 2 or k < 2:
        return row
    bms, jms, ems = anova_mean_squares(ratings)
    if bms + ems == 0:
        return row
    icc = icc_2_1_from_mean_squares(bms, jms, ems, n, k)
    row["icc"] = float(icc)
    if ems > 0:
        a = k * icc / (n * (1 - icc)) if icc < 1 else math.inf
        b = 1 + k * icc * (n - 1) / (n * (1 - icc)) if icc < 1 else math.inf
        if math.isfinite(a):
            v = (a * jms + b * ems) ** 2 / (
                (a * jms) ** 2 / (k - 1) + (b * ems) ** 2 / ((n - 1) * (k - 1))
            )
            alpha = 1 - CONFIDENCE
            f_low = stats.f.ppf(1 - alpha / 2, n - 1, v)
            f_high = stats.f.ppf(1 - alpha / 2, v, n - 1)
            row["icc_ci_low"] = float(
                n * (bms - f_low * ems) / (f_low * (k * jms + (k * n - k - n) * ems) + n * bms)
            )
            row["icc_ci_high"] = float(
                n * (f_high * bms - ems) / (k * jms + (k * n - k - n) * ems + n * f_high * bms)
            )
    return row


def bland_altman(first, second) -> dict:
    """Mean difference (second - first) and 95 % limits of agreement (mean ± 1.96 SD)."""
    first, second = np.asarray(first, float), np.asarray(second, float)
    keep = np.isfinite(first) & np.isfinite(second)
    diff = second[keep] - first[keep]
    if len(diff) < 2:
        return {"mean_difference": math.nan, "loa_low": math.nan, "loa_high": math.nan}
    mean, sd = diff.mean(), diff.std(ddof=1)
    z = stats.norm.ppf(0.5 + CONFIDENCE / 2)
    return {"mean_difference": float(mean), "loa_low": float(mean - z * sd),
            "loa_high": float(mean + z * sd)}  # fmt:skip
