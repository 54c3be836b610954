"""Age-bias ("regression dilution") correction of brain-PAD, seed 002 §2.6.

Global (Eq. 6-8): fit ``PAD = alpha * covariate + beta`` on a reference set and subtract
``alpha * covariate + beta`` from everyone's PAD. The covariate is chronological age (Eq. 6-7,
``form="age"``) or predicted age (Eq. 8, ``form="predicted"``). The seed prints Eq. 7 as
``PAD - alpha * Age + beta``; subtracting the fitted line, ``PAD - (alpha * Age + beta)``, is
what makes the reference PAD uncorrelated with age, so that is what is implemented.

Voxel-wise (§2.6.2): the mean reference PAD map of the participant's 5-year age bin is
subtracted (see :mod:`bids_brainage.stats.voxelwise`); the bins are defined here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

FORMS = ("age", "predicted")
MIN_REFERENCE = 3
# seed 002: 5-year bins, the first one 18-25 years; below 18 and above 90 get bins of their own
AGE_BIN_EDGES = (18.0, *np.arange(25.0, 95.0, 5.0).tolist())


class BiasError(ValueError):
    """The correction cannot be fitted; the message says why in one line."""


@dataclass(frozen=True)
class BiasCorrection:
    """A fitted bias line: PAD = alpha * covariate + beta, on the named reference set."""

    form: str
    alpha: float
    beta: float
    n_reference: int
    reference: str

    @classmethod
    def fit(cls, age, predicted, form: str = "age", reference: str = "") -> BiasCorrection:
        if form not in FORMS:
            raise BiasError(f"bias-correction form must be one of {FORMS}, not {form!r}")
        age, predicted = _finite_pairs(age, predicted)
        if len(age) < MIN_REFERENCE or np.ptp(age) == 0:
            raise BiasError(
                f"the bias reference set ({reference or 'reference'}) has {len(age)} scan(s) "
                f"with an age and a prediction; at least {MIN_REFERENCE} of different ages needed"
            )
        covariate = age if form == "age" else predicted
        fit = stats.linregress(covariate, predicted - age)
        return cls(form, float(fit.slope), float(fit.intercept), len(age), reference)

    def corrected_pad(self, age, predicted) -> np.ndarray:
        age, predicted = np.asarray(age, float), np.asarray(predicted, float)
        covariate = age if self.form == "age" else predicted
        return (predicted - age) - (self.alpha * covariate + self.beta)

    def to_dict(self) -> dict:
        return asdict(self)


def _finite_pairs(age, predicted) -> tuple[np.ndarray, np.ndarray]:
    age, predicted = np.asarray(age, float), np.asarray(predicted, float)
    keep = np.isfinite(age) & np.isfinite(predicted)
    return age[keep], predicted[keep]


def pad_age_correlation(age, pad) -> float:
    """Pearson r of brain-PAD with age (the dilution the correction should remove)."""
    age, pad = _finite_pairs(age, pad)
    if len(age) < 3 or np.ptp(age) == 0 or np.ptp(pad) == 0:
        return math.nan
    return float(stats.pearsonr(age, pad).statistic)


def age_bin(age: float) -> int:
    """Index of the 5-year age bin (0: under 18, 1: 18-25, 2: 25-30, ...)."""
    return int(np.searchsorted(AGE_BIN_EDGES, age, side="right"))


def age_bin_label(index: int) -> str:
    edges = AGE_BIN_EDGES
    if index == 0:
        return f"<{edges[0]:g}"
    if index >= len(edges):
        return f">={edges[-1]:g}"
    return f"{edges[index - 1]:g}-{edges[index]:g}"
