"""Output tables at the precision that means something (years 0.01, statistics 4 digits)."""

import io

import numpy as np
import pandas as pd

from bids_brainage.utils.tables import significant, tidy_numbers, write_tsv, year_columns


def test_significant_digits_by_hand():
    values = [123456.0, 0.000123456, -42.385999999999996, 2.0 / 3.0, 0.0, np.nan, np.inf]
    expected = [123500.0, 0.0001235, -42.39, 0.6667, 0.0, np.nan, np.inf]
    np.testing.assert_array_equal(significant(values), expected)


def test_years_to_hundredths_and_no_float_noise(tmp_path):
    table = pd.DataFrame({"age": [21.199999999999999, 35.016], "brain_pad": [-1.0658e-15, 3.14159],
                          "p": [0.0123456, 1.0], "n": [3, 4], "site": ["A", "B"]})
    tidy = tidy_numbers(table, ["age", "brain_pad"])
    assert tidy["age"].tolist() == [21.2, 35.02]
    assert tidy["brain_pad"].tolist() == [0.0, 3.14]
    assert tidy["p"].tolist() == [0.01235, 1.0]
    assert tidy["n"].tolist() == [3, 4] and tidy["site"].tolist() == ["A", "B"]
    text = write_tsv(table, tmp_path / "t.tsv", ["age", "brain_pad"]).read_text()
    assert text.splitlines()[1] == "21.2\t0\t0.01235\t3\tA"
    assert "e-15" not in text and "-0" not in text.split("\n")[1]
    assert pd.read_csv(io.StringIO(text), sep="\t")["brain_pad"].tolist() == [0.0, 3.14]


def test_year_columns_from_sidecar_descriptions():
    columns = {"age": {"Description": "Age", "Units": "year"}, "t": "Welch's t",
               "difference": "mean1 - mean2 (years)", "r": "Pearson r"}
    assert year_columns(columns) == ["age", "difference"]
