"""Voxel-wise statistics over local brain-age maps in one streaming pass, memory bounded.

Each map is read once, masked, and added into per-(group, age-bin) sums (n, sum x, sum x^2);
rescan pairs into sums of x1, x2, x1^2, x2^2, x1*x2. Nothing holds more than a few maps'
worth of voxels per (group, bin), whatever the number of participants, and chunks of files are
summed in parallel processes and merged.

Seed 002 §2.6.2's correction subtracts the reference participants' mean PAD map of the
participant's 5-year age bin. Because that is a constant per (bin, voxel), the corrected
group moments follow exactly from the per-bin sums:
    sum (x - m_b)   = S1_b - n_b m_b
    sum (x - m_b)^2 = S2_b - 2 m_b S1_b + n_b m_b^2
so no second pass over the files is needed.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
from scipy import stats

from .compare import adjust_pvalues, icc_2_1_from_mean_squares


class MapError(ValueError):
    """A map cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class MapRecord:
    """One scan's local brain-age map and what the statistics need to know about it."""

    path: str
    group: str
    age_bin: int
    reference: bool
    age: float = 0.0  # subtracted from the local brain-age map to give local brain-PAD


@dataclass(frozen=True)
class PairRecord:
    """Two local brain-age maps of one participant (two sessions, runs or scanners)."""

    first: str
    second: str


def load_masked(path, mask: np.ndarray, affine: np.ndarray | None = None) -> np.ndarray:
    """Voxels of ``path`` inside ``mask`` as float64; refuses other grids and non-finite values."""
    try:
        img = nib.load(str(path))
        if img.shape[:3] != mask.shape or len(img.shape) > 3 and img.shape[3] != 1:
            raise MapError(f"{path}: grid {img.shape} does not match the template grid "
                           f"{mask.shape}")  # fmt:skip
        if affine is not None and not np.allclose(img.affine, affine, atol=1e-3):
            raise MapError(f"{path}: affine does not match the template grid")
        values = np.asarray(img.dataobj, dtype=np.float32).reshape(mask.shape)[mask]
    except MapError:
        raise
    except Exception as err:  # nibabel raises many kinds on corrupt files
        raise MapError(f"{path}: cannot be read as NIfTI ({err})") from None
    if not np.isfinite(values).all():
        raise MapError(f"{path}: non-finite values inside the brain mask")
    return values.astype(np.float64)


@dataclass
class MapSums:
    """Sufficient statistics of the maps, per (group, age bin), per reference bin and per pair."""

    n_voxels: int
    counts: dict = field(default_factory=lambda: defaultdict(int))
    sums: dict = field(default_factory=dict)
    squares: dict = field(default_factory=dict)
    reference_counts: dict = field(default_factory=lambda: defaultdict(int))
    reference_sums: dict = field(default_factory=dict)
    pairs: int = 0
    pair_sums: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)

    def _add(self, table: dict, key, values: np.ndarray) -> None:
        if key in table:
            table[key] += values
        else:
            table[key] = values.copy()

    def add_map(self, record: MapRecord, values: np.ndarray) -> None:
        key = (record.group, record.age_bin)
        self.counts[key] += 1
        self._add(self.sums, key, values)
        self._add(self.squares, key, values * values)
        if record.reference:
            self.reference_counts[record.age_bin] += 1
            self._add(self.reference_sums, record.age_bin, values)

    def add_pair(self, first: np.ndarray, second: np.ndarray) -> None:
        self.pairs += 1
        for name, values in (("x1", first), ("x2", second), ("x1x1", first * first),
                             ("x2x2", second * second), ("x1x2", first * second)):  # fmt:skip
            self._add(self.pair_sums, name, values)

    def merge(self, other: MapSums) -> MapSums:
        for key, count in other.counts.items():
            self.counts[key] += count
            self._add(self.sums, key, other.sums[key])
            self._add(self.squares, key, other.squares[key])
        for key, count in other.reference_counts.items():
            self.reference_counts[key] += count
            self._add(self.reference_sums, key, other.reference_sums[key])
        self.pairs += other.pairs
        for name, values in other.pair_sums.items():
            self._add(self.pair_sums, name, values)
        self.failures.extend(other.failures)
        return self

    # --- results -------------------------------------------------------------------------
    def bias_maps(self) -> dict[int, np.ndarray]:
        """Mean reference PAD map per age bin (seed 002's Delta_{b,v})."""
        return {b: self.reference_sums[b] / n for b, n in sorted(self.reference_counts.items())}

    def bin_correction(self, age_bin: int) -> tuple[int, np.ndarray]:
        """The reference bin used for ``age_bin``: itself, else the nearest bin with data."""
        available = sorted(self.reference_counts)
        if not available:
            raise MapError("no reference maps: the voxel-wise age-bin correction needs some")
        nearest = min(available, key=lambda b: (abs(b - age_bin), b))
        return nearest, self.reference_sums[nearest] / self.reference_counts[nearest]

    def group_moments(self, group: str, corrected: bool = True):
        """n, mean map and unbiased variance map of a group's (age-bin corrected) PAD."""
        n, total, squares = 0, np.zeros(self.n_voxels), np.zeros(self.n_voxels)
        for (name, age_bin), count in self.counts.items():
            if name != group:
                continue
            s1, s2 = self.sums[(name, age_bin)], self.squares[(name, age_bin)]
            if corrected:
                _, m = self.bin_correction(age_bin)
                s2 = s2 - 2 * m * s1 + count * m * m
                s1 = s1 - count * m
            n, total, squares = n + count, total + s1, squares + s2
        if n == 0:
            return 0, total, total
        mean = total / n
        variance = (squares - n * mean * mean) / (n - 1) if n > 1 else np.full_like(mean, np.nan)
        return n, mean, np.maximum(variance, 0.0)

    def groups(self) -> list[str]:
        return sorted({group for group, _ in self.counts}, key=str)

    def welch_maps(self, first: str, second: str, corrected: bool = True) -> dict:
        """Welch t, Welch-Satterthwaite df, two-sided p and Cohen's d at every voxel."""
        n1, m1, v1 = self.group_moments(first, corrected)
        n2, m2, v2 = self.group_moments(second, corrected)
        if n1 < 2 or n2 < 2:
            raise MapError(f"voxel-wise {first} vs {second}: each group needs 2 maps "
                           f"(has {n1} and {n2})")  # fmt:skip
        se1, se2 = v1 / n1, v2 / n2
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (m1 - m2) / np.sqrt(se1 + se2)
            df = (se1 + se2) ** 2 / (se1**2 / (n1 - 1) + se2**2 / (n2 - 1))
            pooled = np.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2))
            d = (m1 - m2) / pooled
        p = 2 * stats.t.sf(np.abs(t), df)
        return {"t": t, "df": df, "p": p, "cohens_d": d, "n1": n1, "n2": n2,
                "difference": m1 - m2}  # fmt:skip

    def icc_map(self) -> np.ndarray:
        """ICC(2,1) at every voxel over the rescan pairs (k = 2 raters)."""
        n, k = self.pairs, 2
        if n < 2:
            raise MapError(f"voxel-wise ICC needs at least 2 rescan pairs (has {n})")
        s = self.pair_sums
        grand = (s["x1"] + s["x2"]) / (n * k)
        ss_total = s["x1x1"] + s["x2x2"] - n * k * grand**2
        ss_targets = (s["x1x1"] + s["x2x2"] + 2 * s["x1x2"]) / k - n * k * grand**2
        ss_raters = (s["x1"] ** 2 + s["x2"] ** 2) / n - n * k * grand**2
        ss_error = ss_total - ss_targets - ss_raters
        bms, jms = ss_targets / (n - 1), ss_raters / (k - 1)
        ems = ss_error / ((n - 1) * (k - 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            return icc_2_1_from_mean_squares(bms, jms, ems, n, k)


def _accumulate(maps, pairs, mask, affine) -> MapSums:
    sums = MapSums(int(mask.sum()))
    for record in maps:
        try:
            sums.add_map(record, load_masked(record.path, mask, affine) - record.age)
        except MapError as err:
            sums.failures.append(str(err))
    for pair in pairs:
        try:
            sums.add_pair(load_masked(pair.first, mask, affine),
                          load_masked(pair.second, mask, affine))  # fmt:skip
        except MapError as err:
            sums.failures.append(str(err))
    return sums


def accumulate_maps(maps: list[MapRecord], pairs: list[PairRecord], mask: np.ndarray,
                    affine: np.ndarray | None = None, n_jobs: int = 1) -> MapSums:  # fmt:skip
    """One pass over every map, in ``n_jobs`` processes that each sum a chunk of the files."""
    n_jobs = max(1, min(n_jobs, len(maps) + len(pairs)))
    if n_jobs == 1:
        return _accumulate(maps, pairs, mask, affine)
    map_chunks = [maps[i::n_jobs] for i in range(n_jobs)]
    pair_chunks = [pairs[i::n_jobs] for i in range(n_jobs)]
    with ProcessPoolExecutor(n_jobs) as pool:
        parts = list(pool.map(_accumulate, map_chunks, pair_chunks, [mask] * n_jobs,
                              [affine] * n_jobs))  # fmt:skip
    total = parts[0]
    for part in parts[1:]:
        total.merge(part)
    return total


def unmask(values: np.ndarray, mask: np.ndarray, fill: float = 0.0) -> np.ndarray:
    volume = np.full(mask.shape, fill, dtype=np.float32)
    volume[mask] = values
    return volume


def maps_fdr(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p at every voxel."""
    return adjust_pvalues(pvalues)[1]
