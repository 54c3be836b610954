"""Numbers in the output tables at the precision that means something: years to 0.01, every
other statistic to 4 significant digits, and no float noise (``-42.385999999999996``,
``-1.06581e-15``) in what a user reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

YEAR_DECIMALS = 2
SIGNIFICANT_DIGITS = 4
FLOAT_FORMAT = "%.10g"  # prints a rounded value's shortest form, never binary noise


def significant(values, digits: int = SIGNIFICANT_DIGITS) -> np.ndarray:
    """``values`` rounded to ``digits`` significant digits (NaN and ±inf kept)."""
    values = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        magnitude = np.floor(np.log10(np.abs(values)))
    magnitude = np.where(np.isfinite(magnitude), magnitude, 0)
    scale = 10.0 ** (digits - 1 - magnitude)
    with np.errstate(invalid="ignore", over="ignore"):
        rounded = np.round(values * scale) / scale
    return np.where(np.isfinite(values), rounded, values) + 0.0  # + 0.0: no "-0"


def tidy_numbers(table: pd.DataFrame, years: Iterable[str]) -> pd.DataFrame:
    """A copy with the ``years`` columns rounded to 0.01 and other float columns to 4
    significant digits; integer and text columns as they are.
    """
    years = set(years)
    out = table.copy()
    for column in out.columns:
        if not pd.api.types.is_float_dtype(out[column]):
            continue
        values = out[column].to_numpy(dtype=float)
        if column in years:
            out[column] = np.round(values, YEAR_DECIMALS) + 0.0
        else:
            out[column] = significant(values)
    return out


def write_tsv(table: pd.DataFrame, path: Path, years: Iterable[str]) -> Path:
    """``table`` as a BIDS TSV (n/a for missing) with tidied numbers."""
    tidy_numbers(table, years).to_csv(path, sep="\t", index=False, na_rep="n/a",
                                      float_format=FLOAT_FORMAT)  # fmt:skip
    return Path(path)


def year_columns(columns: dict) -> list[str]:
    """The columns a sidecar description marks as years (``Units: year`` or ``(years)``)."""
    found = []
    for name, about in columns.items():
        text = about if isinstance(about, str) else about.get("Description", "")
        units = None if isinstance(about, str) else about.get("Units")
        if units == "year" or "(years" in text:
            found.append(name)
    return found
