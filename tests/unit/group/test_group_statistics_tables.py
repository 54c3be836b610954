"""The group statistics on in-memory tables: no derivatives on disk, every figure checked
against scipy or a hand computation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bids_brainage.config import StatisticsSettings
from bids_brainage.group.statistics import GroupSettings, analyse_predictions


def _tables(n_controls=30, n_patients=20, planted_gap=6.0, seed=0):
    """Scans of controls and patients; patients' brains look ``planted_gap`` years older."""
    rng = np.random.default_rng(seed)
    n = n_controls + n_patients
    age = rng.uniform(25, 80, n)
    group = ["HC"] * n_controls + ["PT"] * n_patients
    predicted = age + rng.normal(0, 3, n) + np.where(np.array(group) == "PT", planted_gap, 0)
    table = pd.DataFrame({
        "participant_id": [f"sub-{i:02d}" for i in range(n)], "session_id": None,
        "acquisition": None, "run": None, "site": "A", "site_source": "participants.tsv",
        "age": age, "sex": "F", "group": group, "qc_flags": "", "source": "x",
        "excluded": None,
    })  # fmt:skip
    predictions = pd.DataFrame({"scan": table.index, "model": "m", "predicted_age": predicted,
                                "interval_lower": predicted - 8,
                                "interval_upper": predicted + 8})  # fmt:skip
    return table, predictions


def _settings():
    return GroupSettings(StatisticsSettings(), ["HC"], seed=0)


def test_in_memory_tables_give_the_welch_test_scipy_gives():
    table, predictions = _tables()
    results = analyse_predictions(table, predictions, _settings())
    analysis = results.models["m"]
    scans = analysis.scans
    assert scans["brain_pad"].to_numpy() == pytest.approx(
        predictions["predicted_age"].to_numpy() - table["age"].to_numpy()
    )
    row = analysis.comparisons.query("measure == 'brain_pad_corrected'").iloc[0]
    patients = scans.loc[scans["group"] == "PT", "brain_pad_corrected"]
    controls = scans.loc[scans["group"] == "HC", "brain_pad_corrected"]
    expected = sps.ttest_ind(patients, controls, equal_var=False)
    signed = 1 if row["group1"] == "PT" else -1
    assert signed * row["t"] == pytest.approx(expected.statistic, rel=1e-9)
    assert row["p"] == pytest.approx(expected.pvalue, rel=1e-9)
    pooled = np.sqrt((patients.var(ddof=1) * (len(patients) - 1)
                      + controls.var(ddof=1) * (len(controls) - 1))
                     / (len(patients) + len(controls) - 2))  # fmt:skip
    assert signed * row["cohens_d"] == pytest.approx(
        (patients.mean() - controls.mean()) / pooled, rel=1e-9
    )
    # the planted 6-year gap is recovered with the right sign, within its standard error
    gap = patients.mean() - controls.mean()
    se = np.sqrt(patients.var(ddof=1) / len(patients) + controls.var(ddof=1) / len(controls))
    assert abs(gap - 6.0) < 3 * se


def test_in_memory_tables_of_controls_only_skip_the_comparisons_and_say_why():
    table, predictions = _tables(n_controls=25, n_patients=0)
    results = analyse_predictions(table, predictions, _settings())
    analysis = results.models["m"]
    assert analysis.comparisons.empty
    assert any("one group only" in line for line in results.skipped)
    # bias correction fitted on the controls: corrected PAD has no age trend left on them
    slope = sps.linregress(analysis.scans["age"], analysis.scans["brain_pad_corrected"]).slope
    assert abs(slope) < 1e-9


def test_excluded_scans_stay_in_the_table_but_out_of_the_statistics():
    table, predictions = _tables()
    table.loc[[0, 1], "excluded"] = "QC: registration_failed"
    results = analyse_predictions(table, predictions, _settings())
    assert len(results.scans) == len(table)
    assert not {0, 1} & set(results.models["m"].scans.index)
