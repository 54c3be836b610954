"""Group statistics against scipy / statsmodels / worked examples (to 1e-8 where exact)."""

from __future__ import annotations

from fractions import Fraction

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bids_brainage.stats.bias import BiasCorrection, BiasError, age_bin, age_bin_label
from bids_brainage.stats.compare import (
    adjust_pvalues,
    anova_mean_squares,
    bland_altman,
    cohens_d,
    compare_groups,
    icc_2_1,
    roc_auc,
    welch_test,
)
from bids_brainage.stats.voxelwise import (
    MapError,
    MapRecord,
    MapSums,
    PairRecord,
    accumulate_maps,
    load_masked,
)

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; they report ICC(2,1) = .29
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8],
                          [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)  # fmt:skip


def test_welch_equals_scipy_statsmodels_and_seed_equations():
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

    rng = np.random.default_rng(1)
    a, b = rng.normal(2, 1, 13), rng.normal(0, 3, 31)
    row = welch_test(a, b)
    t, p, df = CompareMeans(DescrStatsW(a), DescrStatsW(b)).ttest_ind(usevar="unequal")
    assert row["t"] == pytest.approx(t, abs=1e-8)
    assert row["p"] == pytest.approx(p, abs=1e-8)
    assert row["df"] == pytest.approx(df, abs=1e-8)
    # seed 002 Eq. 1 and 2 by hand
    s1, s2 = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    assert row["t"] == pytest.approx((a.mean() - b.mean()) / np.sqrt(s1 + s2), abs=1e-10)
    hand_df = (s1 + s2) ** 2 / (s1**2 / (len(a) - 1) + s2**2 / (len(b) - 1))
    assert row["df"] == pytest.approx(hand_df, abs=1e-8)
    assert row["difference_ci_low"] < row["difference"] < row["difference_ci_high"]


def test_cohens_d_equals_pooled_student_t_identity():
    rng = np.random.default_rng(2)
    a, b = rng.normal(1, 2, 20), rng.normal(0, 1, 9)
    pooled_t = stats.ttest_ind(a, b, equal_var=True).statistic
    assert cohens_d(a, b) == pytest.approx(pooled_t * np.sqrt(1 / 20 + 1 / 9), abs=1e-10)
    # hand-worked: [1,2,3] vs [3,4,5]: means differ by 2, both variances 1 -> d = -2
    assert cohens_d([1, 2, 3], [3, 4, 5]) == pytest.approx(-2.0, abs=1e-12)


def test_pvalue_adjustments_by_hand():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.5])
    bonferroni, fdr = adjust_pvalues(p)
    np.testing.assert_allclose(bonferroni, [0.04, 0.16, 0.12, np.nan, 1.0])
    # BH by hand: sorted 0.01, 0.03, 0.04, 0.5 (m = 4) -> 0.04, 0.0533, 0.0533, 0.5
    np.testing.assert_allclose(fdr, [0.04, 0.16 / 3, 0.16 / 3, np.nan, 0.5])


def test_compare_groups_every_pair():
    values = pd.Series([1.0, 2, 3, 4, 5, 6, 7, 8, 9.5])
    groups = pd.Series(["A", "A", "A", "B", "B", "B", "C", "C", "C"])
    table = compare_groups(values, groups)
    assert list(zip(table.group1, table.group2, strict=False)) == [
        ("A", "B"),
        ("A", "C"),
        ("B", "C"),
    ]
    np.testing.assert_allclose(table.p_bonferroni, np.minimum(table.p * 3, 1))
    ab = stats.ttest_ind([1, 2, 3], [4, 5, 6], equal_var=False)
    assert table.t[0] == pytest.approx(ab.statistic, abs=1e-10)


def test_roc_auc_equals_mann_whitney():
    rng = np.random.default_rng(3)
    patients, controls = rng.normal(1, 1, 25), rng.normal(0, 1, 40)
    row = roc_auc(patients, controls, n_boot=300)
    u = stats.mannwhitneyu(patients, controls).statistic
    assert row["auc"] == pytest.approx(u / (25 * 40), abs=1e-10)
    assert row["auc_ci_low"] < row["auc"] < row["auc_ci_high"]


def test_icc_shrout_fleiss_worked_example():
    row = icc_2_1(SHROUT_FLEISS)
    assert row["icc"] == pytest.approx(0.29, abs=0.005)  # the published value
    # exact arithmetic by hand (fractions), independent of numpy
    data = [[Fraction(int(v)) for v in r] for r in SHROUT_FLEISS]
    n, k = 6, 4
    grand = sum(map(sum, data)) / (n * k)
    bss = k * sum((sum(r) / k - grand) ** 2 for r in data)
    jss = n * sum((sum(r[j] for r in data) / n - grand) ** 2 for j in range(k))
    tss = sum((v - grand) ** 2 for r in data for v in r)
    bms, jms, ems = bss / (n - 1), jss / (k - 1), (tss - bss - jss) / ((n - 1) * (k - 1))
    exact = (bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n)
    assert row["icc"] == pytest.approx(float(exact), abs=1e-12)
    # the mean squares agree with a statsmodels two-way ANOVA
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    long = pd.DataFrame([(i, j, v) for i, r in enumerate(SHROUT_FLEISS) for j, v in enumerate(r)],
                        columns=["target", "judge", "rating"])  # fmt:skip
    anova = anova_lm(ols("rating ~ C(target) + C(judge)", long).fit())
    ms = anova["mean_sq"]
    np.testing.assert_allclose(
        anova_mean_squares(SHROUT_FLEISS),
        [ms["C(target)"], ms["C(judge)"], ms["Residual"]],
        atol=1e-8,
    )
    assert row["icc_ci_low"] < row["icc"] < row["icc_ci_high"]


def test_icc_interval_covers_truth():
    """The McGraw-Wong interval covers the generator's ICC about 95 % of the time."""
    rng = np.random.default_rng(4)
    truth, hits = 0.8, 0
    for _ in range(400):
        subject = rng.normal(0, np.sqrt(truth), 25)[:, None]
        ratings = subject + rng.normal(0, np.sqrt(1 - truth), (25, 2))
        row = icc_2_1(ratings)
        hits += row["icc_ci_low"] <= truth <= row["icc_ci_high"]
    assert 0.91 <= hits / 400 <= 0.99


def test_bland_altman_by_hand():
    row = bland_altman([1, 2, 3, 4], [2, 2, 5, 5])  # differences 1, 0, 2, 1: mean 1, sd sqrt(2/3)
    assert row["mean_difference"] == pytest.approx(1.0)
    assert row["loa_high"] - 1 == pytest.approx(stats.norm.ppf(0.975) * np.sqrt(2 / 3))


def _diluted(rng, n=200, slope=0.7):
    age = rng.uniform(20, 80, n)
    predicted = 50 + slope * (age - 50) + rng.normal(0, 4, n)
    return age, predicted


def test_bias_correction_both_forms():
    age, predicted = _diluted(np.random.default_rng(5))
    pad = predicted - age
    alpha, beta = np.polyfit(age, pad, 1)
    by_age = BiasCorrection.fit(age, predicted, "age")
    assert (by_age.alpha, by_age.beta) == pytest.approx((alpha, beta), abs=1e-8)
    corrected = by_age.corrected_pad(age, predicted)
    np.testing.assert_allclose(corrected, pad - (alpha * age + beta), atol=1e-10)
    assert abs(stats.pearsonr(age, corrected).statistic) < 1e-10
    assert abs(stats.pearsonr(age, pad).statistic) > 0.5
    by_predicted = BiasCorrection.fit(age, predicted, "predicted")
    alpha2, beta2 = np.polyfit(predicted, pad, 1)
    np.testing.assert_allclose(by_predicted.corrected_pad(age, predicted),
                               pad - (alpha2 * predicted + beta2), atol=1e-10)  # fmt:skip
    with pytest.raises(BiasError, match="at least 3"):
        BiasCorrection.fit([30, 40], [35, 41])


def test_age_bins_follow_seed_002():
    assert [age_bin(a) for a in (17.9, 18, 24.9, 25, 29.99, 30, 89.9, 90, 101)] == [
        0, 1, 1, 2, 2, 3, 14, 15, 15]  # fmt:skip
    assert [age_bin_label(i) for i in (0, 1, 2, 15)] == ["<18", "18-25", "25-30", ">=90"]


# --- voxel-wise --------------------------------------------------------------------------------
def _write_maps(folder, rng, n, shape=(6, 5, 4), offset=0.0):
    paths = []
    for i in range(n):
        path = folder / f"map{offset:+.0f}_{i}.nii.gz"
        nib.Nifti1Image(rng.normal(offset, 1 + i % 3, shape).astype(np.float32),
                        np.eye(4)).to_filename(path)  # fmt:skip
        paths.append(path)
    return paths


@pytest.fixture
def voxel_dataset(tmp_path):
    rng = np.random.default_rng(6)
    mask = np.zeros((6, 5, 4), bool)
    mask[1:5, 1:4, :3] = True
    controls = _write_maps(tmp_path, rng, 12)
    patients = _write_maps(tmp_path, rng, 7, offset=3.0)
    control_bins = [1, 2, 3] * 4
    patient_bins = [2, 3, 3, 4, 4, 5, 5]  # bins 4 and 5 borrow the nearest reference bin (3)
    records = [
        MapRecord(str(p), "HC", b, True) for p, b in zip(controls, control_bins, strict=False)
    ]
    records += [
        MapRecord(str(p), "PT", b, False) for p, b in zip(patients, patient_bins, strict=False)
    ]
    pairs = [PairRecord(str(a), str(b)) for a, b in zip(controls[:6], controls[6:], strict=False)]
    return mask, records, pairs


def test_voxelwise_equals_scipy_per_voxel(voxel_dataset):
    mask, records, pairs = voxel_dataset
    sums = accumulate_maps(records, pairs, mask)
    values = {r.path: np.asarray(nib.load(r.path).dataobj)[mask].astype(float) for r in records}
    bias = {b: np.mean([values[r.path] for r in records if r.reference and r.age_bin == b], 0)
            for b in (1, 2, 3)}  # fmt:skip
    np.testing.assert_allclose(sums.bias_maps()[2], bias[2], atol=1e-10)
    corrected = {"HC": [], "PT": []}
    for r in records:
        corrected[r.group].append(values[r.path] - bias[min(r.age_bin, 3)])
    hc, pt = np.array(corrected["HC"]), np.array(corrected["PT"])
    maps = sums.welch_maps("PT", "HC")
    expected = stats.ttest_ind(pt, hc, equal_var=False, axis=0)
    np.testing.assert_allclose(maps["t"], expected.statistic, atol=1e-8)
    np.testing.assert_allclose(maps["df"], expected.df, atol=1e-8)
    np.testing.assert_allclose(maps["p"], expected.pvalue, atol=1e-8)
    d = [cohens_d(pt[:, v], hc[:, v]) for v in range(mask.sum())]
    np.testing.assert_allclose(maps["cohens_d"], d, atol=1e-8)
    pair_values = np.array([[values[p.first], values[p.second]] for p in pairs])  # pair, 2, voxel
    icc = [icc_2_1(pair_values[:, :, v])["icc"] for v in range(mask.sum())]
    np.testing.assert_allclose(sums.icc_map(), icc, atol=1e-8)


def test_parallel_chunks_equal_one_pass(voxel_dataset):
    mask, records, pairs = voxel_dataset
    one = accumulate_maps(records, pairs, mask, n_jobs=1).welch_maps("PT", "HC")
    two = accumulate_maps(records, pairs, mask, n_jobs=2).welch_maps("PT", "HC")
    for key in ("t", "df", "p", "cohens_d"):
        np.testing.assert_allclose(one[key], two[key], atol=1e-10)


def test_bad_maps_are_refused_by_name(tmp_path):
    mask = np.ones((6, 5, 4), bool)
    wrong = tmp_path / "wrong_grid.nii.gz"
    nib.Nifti1Image(np.zeros((5, 5, 4), np.float32), np.eye(4)).to_filename(wrong)
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"not a nifti")
    nan = tmp_path / "nan.nii.gz"
    nib.Nifti1Image(np.full((6, 5, 4), np.nan, np.float32), np.eye(4)).to_filename(nan)
    for path, problem in ((wrong, "does not match"), (corrupt, "cannot be read"),
                          (nan, "non-finite")):  # fmt:skip
        with pytest.raises(MapError, match=problem) as err:
            load_masked(path, mask)
        assert str(path) in str(err.value)
    sums = accumulate_maps([MapRecord(str(corrupt), "HC", 1, True)], [], mask)
    assert len(sums.failures) == 1 and isinstance(sums, MapSums)


def test_bootstrap_auc_by_ranks_equals_sklearn(rng):
    from sklearn.metrics import roc_auc_score

    from bids_brainage.stats.compare import _auc_by_ranks

    scores = np.round(rng.normal(size=(50, 7 + 9)), 1)  # rounded: ties occur
    labels = np.r_[np.ones(7), np.zeros(9)]
    expected = [roc_auc_score(labels, row) for row in scores]
    assert _auc_by_ranks(scores, 7) == pytest.approx(expected, abs=1e-12)


def test_site_calibration_offset_slope_and_interval_by_hand(rng):
    from bids_brainage.stats.calibration import apply_site_calibrations, fit_site_calibrations

    narrow = pd.DataFrame({"site": "N", "age": rng.uniform(60, 70, 20)})  # spans < 20 y
    wide = pd.DataFrame({"site": "W", "age": np.linspace(20, 80, 25)})
    small = pd.DataFrame({"site": "S", "age": [30.0, 50.0, 70.0]})
    controls = pd.concat([narrow, wide, small], ignore_index=True)
    controls["predicted_age"] = controls["age"] + rng.normal(0, 4, len(controls))
    controls.loc[controls["site"] == "N", "predicted_age"] += 6.0
    alpha, beta = -0.2, 10.0
    fits = fit_site_calibrations(controls, ["N", "W", "S"], alpha, beta)
    n = controls[controls["site"] == "N"]
    residual = (n["predicted_age"] - n["age"]) - (alpha * n["age"] + beta)
    assert fits["N"].mode == "site offset" and fits["N"].alpha == alpha
    assert fits["N"].offset == pytest.approx(residual.mean())
    assert fits["N"].offset_se == pytest.approx(residual.std(ddof=1) / np.sqrt(20))
    assert fits["N"].interval_halfwidth == pytest.approx(
        np.sort(np.abs(residual - residual.mean()))[18]
    )  # ceil(21 * 0.9) = 19th smallest
    w = controls[controls["site"] == "W"]
    line = stats.linregress(w["age"], w["predicted_age"] - w["age"])
    assert fits["W"].mode == "site line"
    assert (fits["W"].alpha, fits["W"].beta) == pytest.approx((line.slope, line.intercept))
    assert fits["S"].mode == "pooled" and np.isnan(fits["S"].offset)
    pad, mode, _ = apply_site_calibrations(controls, fits)
    assert abs(pad[controls["site"] == "N"].mean()) < 1e-9
    assert set(mode[controls["site"] == "S"]) == {"pooled"}
