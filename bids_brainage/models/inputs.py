"""What a model reads: the participant-level features of one scan, and the input contract.

A bundle's contract names the template, grid, normalisation and inputs it was trained on; a scan
whose features do not match is refused rather than silently mispredicted.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ..preprocessing.conform import WORKING_VOXEL_MM

INPUT_KINDS = ("histogram", "tissue", "t1w")
TISSUE_INPUTS = ("GM", "WM")
# "tiv": the GM/WM maps scaled to a head of REFERENCE_TIV_ML, so that features do not depend on
# head size nor on a linear alignment of the input to a template (which rescales the brain)
TISSUE_SCALINGS = ("none", "tiv")
REFERENCE_TIV_ML = 1500.0
LOGGER = logging.getLogger("bids_brainage")
NORMALISATION = "v2"  # GM peak at 0.5, WM peak at 0.8 (seed 000)
HISTOGRAM_BINS = 200


class ContractError(ValueError):
    """A bundle and a scan's features do not fit together."""


@dataclass
class ScanFeatures:
    """Paths of one scan's model inputs (template-space maps and the histogram table)."""

    histogram: Path
    tissue: dict[str, Path] = field(default_factory=dict)  # GM/WM (and CSF) modulated probseg
    t1w: Path | None = None  # v2-normalised brain on the template grid

    def missing(self, kind: str) -> list[Path]:
        paths = {"histogram": [self.histogram],
                 "tissue": [self.tissue.get(t) for t in TISSUE_INPUTS],
                 "t1w": [self.t1w]}[kind]  # fmt:skip
        return [p for p in paths if p is None or not Path(p).exists()]


def grid_signature(image: nib.Nifti1Image) -> dict:
    """Shape and affine of a template grid, with a short checksum of the affine."""
    affine = np.round(np.asarray(image.affine, float), 4)
    return {
        "shape": [int(s) for s in image.shape[:3]],
        "affine_sha1": hashlib.sha1(affine.tobytes()).hexdigest()[:12],
    }


def read_histogram(path: Path) -> np.ndarray:
    table = pd.read_csv(path, sep="\t")
    if "fraction" not in table or len(table) != HISTOGRAM_BINS:
        raise ContractError(f"{path}: not a {HISTOGRAM_BINS}-bin histogram features table")
    return table.sort_values("bin")["fraction"].to_numpy(np.float64)


def read_map(path: Path, grid: dict | None = None) -> np.ndarray:
    """A template-space map as float32, checked against the contract's grid when given."""
    image = nib.load(str(path))
    if grid is not None and grid_signature(image) != grid:
        raise ContractError(
            f"{path}: its grid {grid_signature(image)} is not the bundle's template grid {grid}"
        )
    return np.asarray(image.dataobj, dtype=np.float32)


def total_intracranial_ml(features: ScanFeatures, grid: dict | None = None) -> float:
    """TIV from the CSF, GM and WM modulated maps: Jacobian modulation keeps native volumes, so
    their sum is the native segmentation's TIV (to 0.1 ml on IXI scans).
    """
    if "CSF" not in features.tissue:
        raise ContractError(f"{features.tissue.get('GM')}: the CSF modulated map is needed to "
                            "scale by total intracranial volume")  # fmt:skip
    total = 0.0
    for label in ("CSF", *TISSUE_INPUTS):
        path = features.tissue[label]
        if not Path(path).exists():
            raise ContractError(f"{path}: model input missing")
        voxel_ml = float(np.prod(nib.load(str(path)).header.get_zooms()[:3])) / 1000
        total += float(read_map(path, grid).sum(dtype=np.float64)) * voxel_ml
    if not np.isfinite(total) or total <= 0:
        raise ContractError(f"{features.tissue['GM']}: total intracranial volume {total:.1f} ml "
                            "is not positive")  # fmt:skip
    return total


def load_inputs(features: ScanFeatures, kind: str, grid: dict | None = None,
                scaling: str = "none") -> np.ndarray:  # fmt:skip
    """One scan's model input: the histogram vector, the (GM, WM) stack (scaled by TIV with
    ``scaling="tiv"``), or the T1w volume.
    """
    missing = features.missing(kind)
    if missing:
        raise ContractError(f"{missing[0]}: model input missing")
    if kind == "histogram":
        return read_histogram(features.histogram)
    if kind == "tissue":
        maps = np.stack([read_map(features.tissue[t], grid) for t in TISSUE_INPUTS])
        if scaling == "tiv":
            maps *= np.float32(REFERENCE_TIV_ML / total_intracranial_ml(features, grid))
        elif scaling != "none":
            raise ContractError(f"unknown tissue scaling {scaling!r}; known: "
                                f"{', '.join(TISSUE_SCALINGS)}")  # fmt:skip
        return maps
    if kind == "t1w":
        return read_map(features.t1w, grid)[None]
    raise ValueError(f"unknown input kind {kind!r}; known: {', '.join(INPUT_KINDS)}")


def check_contract(contract: dict, template: dict, *, bundle: str) -> None:
    """Refuse a bundle made for another template, resolution or normalisation."""
    wanted = {"template": template["name"], "resolution": int(template["resolution"]),
              "normalisation": NORMALISATION}  # fmt:skip
    for key, value in wanted.items():
        if contract.get(key) != value:
            raise ContractError(
                f"{bundle}: made for {key} {contract.get(key)!r}, but this run uses {value!r}"
            )
    # bundles trained before the working grid existed carry no entry: their features came from
    # each scan's own grid, which equals the working grid only for 2 mm training scans
    grid_mm = contract.get("working_voxel_mm")
    if grid_mm is None:
        LOGGER.warning("%s: records no working grid (trained before it existed); its training "
                       "scans are assumed to be %g mm", bundle, WORKING_VOXEL_MM)  # fmt:skip
    elif float(grid_mm) != WORKING_VOXEL_MM:
        raise ContractError(f"{bundle}: made for a {grid_mm} mm working grid, but this run uses "
                            f"{WORKING_VOXEL_MM:g} mm")  # fmt:skip
