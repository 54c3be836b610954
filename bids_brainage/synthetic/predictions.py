"""Synthetic participant-level predictions with a known patient effect, for the group level.

The generator is the textbook model of a brain-age study:

    latent_i    = mean_age + dilution * (age_i - mean_age) + effect * patient_i + u_i
    predicted_s = latent_i + e_s                 (one e_s per scan; rescans share latent_i)

with u_i ~ N(0, participant_sd) and e_s ~ N(0, scan_sd). ``dilution < 1`` is the regression
dilution (old brains under-, young brains over-estimated); ``effect`` is what the group level
must recover after correcting on the controls. The true test-retest ICC of the rescanned
participants is var(latent) / (var(latent) + scan_sd^2), written to ``ground_truth.json``.

Optionally, each scan also gets a local brain-age map (zero outside a brain-shaped mask) whose
patients carry the effect only in one "region", and the per-ROI table of its means.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .. import __version__
from ..models.predict import BRAINAGE_COLUMNS
from ..utils.derivatives import derivative_path, write_derivatives_root

MAP_SHAPE = (12, 14, 12)
MAP_VOXEL_MM = 8.0
MAP_SPACE = "MNI152NLin2009cSym"


def map_geometry(shape=MAP_SHAPE, voxel_mm: float = MAP_VOXEL_MM):
    """Affine, brain mask (an ellipsoid) and ROI labels (1: a left slab, 2: right, 3: rest)."""
    affine = np.diag([voxel_mm] * 3 + [1.0])
    affine[:3, 3] = -np.array(shape) * voxel_mm / 2
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape, np.float32)[:, None, None, None] - 1) / 2
    radius = (np.array(shape, np.float32) * 0.42)[:, None, None, None]
    mask = (((grid - centre) / radius) ** 2).sum(0) <= 1
    slab = np.abs(grid[1] - centre[1]) < shape[1] / 7
    labels = np.where(mask, 3, 0)
    labels[(grid[0] < centre[0]) & slab & mask] = 1
    labels[(grid[0] > centre[0]) & slab & mask] = 2
    return affine, mask, labels


def make_prediction_derivatives(
    root: Path,
    n_controls: int = 120,
    n_patients: int = 60,
    *,
    effect: float = 6.0,
    dilution: float = 0.7,
    participant_sd: float = 3.0,
    scan_sd: float = 2.0,
    n_rescans: int = 20,
    sites=("A", "B"),
    patient_groups=("PT",),
    site_offsets: dict | None = None,
    always_session: bool = False,
    local_maps: bool = False,
    map_shape=MAP_SHAPE,
    map_voxel_mm: float = MAP_VOXEL_MM,
    seed: int = 0,
) -> dict:
    """``root/bids`` (participants.tsv) and ``root/derivatives`` (QC JSON + _brainage.tsv).

    ``site_offsets`` adds a scanner offset (years) to every prediction of a site. Patients are
    spread over ``patient_groups`` in turn; ``always_session`` gives participants
    without a rescan a ``ses-1`` too.
    """
    rng = np.random.default_rng(seed)
    bids, out = Path(root) / "bids", Path(root) / "derivatives"
    bids.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps(
        {"Name": "synthetic predictions", "BIDSVersion": "1.10.0", "License": "CC0"}))  # fmt:skip
    geometry = map_geometry(map_shape, map_voxel_mm) if local_maps else None
    n = n_controls + n_patients
    patient = np.r_[np.zeros(n_controls, bool), np.ones(n_patients, bool)]
    age = np.where(patient, rng.uniform(55, 85, n), rng.uniform(20, 85, n))
    mean_age = 50.0
    latent = mean_age + dilution * (age - mean_age) + effect * patient
    latent += rng.normal(0, participant_sd, n)
    site_of = [sites[i % len(sites)] for i in range(n)]
    latent += np.array([(site_offsets or {}).get(site, 0.0) for site in site_of])
    rescanned = set(rng.choice(n, n_rescans, replace=False).tolist()) if n_rescans else set()
    rows, scans = [], []
    for i in range(n):
        subject = f"p{i:03d}"
        site = sites[i % len(sites)]
        sessions = ["1", "2"] if i in rescanned else ["1" if always_session else None]
        for session in sessions:
            predicted = float(latent[i] + rng.normal(0, scan_sd))
            ents = {"subject": subject, "session": session}
            _write_scan(out, ents, site, predicted, float(age[i]), map_voxel_mm)
            if local_maps:
                _write_local_map(out, ents, predicted, bool(patient[i]), effect, rng, geometry,
                                 map_voxel_mm)  # fmt:skip
            scans.append({"participant_id": f"sub-{subject}", "session": session,
                          "predicted_age": predicted})  # fmt:skip
        rows.append({"participant_id": f"sub-{subject}", "age": round(float(age[i]), 2),
                     "sex": "F" if i % 2 else "M", "site": site,
                     "group": patient_groups[i % len(patient_groups)] if patient[i]
                     else "HC"})  # fmt:skip
    pd.DataFrame(rows).to_csv(bids / "participants.tsv", sep="\t", index=False)
    rescan_latent = latent[sorted(rescanned)] if rescanned else np.array([])
    truth = {
        "effect": effect, "dilution": dilution, "scan_sd": scan_sd,
        "icc": float(rescan_latent.var(ddof=1) / (rescan_latent.var(ddof=1) + scan_sd**2))
        if len(rescan_latent) > 1 else None,
    }  # fmt:skip
    (Path(root) / "ground_truth.json").write_text(json.dumps(truth, indent=1))
    write_derivatives_root(out, bids)
    return {"bids": bids, "derivatives": out, "truth": truth, "participants": pd.DataFrame(rows),
            "scans": pd.DataFrame(scans)}  # fmt:skip


def _write_scan(out: Path, ents: dict, site: str, predicted: float, age: float,
                voxel_mm: float = MAP_VOXEL_MM) -> None:  # fmt:skip
    qc_path = out / derivative_path({**ents, "suffix": "qc", "extension": ".json"})
    qc_path.parent.mkdir(parents=True, exist_ok=True)
    scan = {k: v for k, v in ents.items() if v}
    qc = {"bids_brainage_version": __version__,
          "scan": {**scan, "site": site, "site_source": "participants.tsv", "source": "synthetic"},
          "template": {"name": MAP_SPACE, "resolution": int(voxel_mm), "source": "synthetic"},
          "flags": []}  # fmt:skip
    qc_path.write_text(json.dumps(qc))
    row = {"model": "synthetic", "model_kind": "tissue-linear", "model_version": "0",
           "predicted_age": round(predicted, 3), "interval_lower": round(predicted - 8, 3),
           "interval_upper": round(predicted + 8, 3), "interval_coverage": 0.9,
           "chronological_age": round(age, 2), "brain_pad": round(predicted - age, 3)}  # fmt:skip
    pd.DataFrame([row], columns=list(BRAINAGE_COLUMNS)).to_csv(
        out / derivative_path({**ents, "suffix": "brainage", "extension": ".tsv"}),
        sep="\t", index=False,
    )  # fmt:skip


def _write_local_map(out, ents, predicted, patient, effect, rng, geometry, voxel_mm) -> None:
    """Local brain age: the global prediction everywhere, the patient effect only in ROI 1."""
    affine, mask, labels = geometry
    local = np.full(mask.shape, predicted - (effect if patient else 0.0), dtype=np.float32)
    local[labels == 1] += effect if patient else 0.0
    local += rng.standard_normal(mask.shape, dtype=np.float32)
    local[~mask] = 0
    entities = {**ents, "space": MAP_SPACE, "resolution": f"{voxel_mm:g}", "desc": "local",
                "suffix": "brainage", "extension": ".nii.gz"}  # fmt:skip
    nib.Nifti1Image(local, affine).to_filename(out / derivative_path(entities))
    # an occlusion map: the (planted) model relies on the right region only
    occlusion = rng.normal(0, 0.2, mask.shape).astype(np.float32)
    occlusion[labels == 2] -= 3.0
    occlusion[~mask] = 0
    nib.Nifti1Image(occlusion, affine).to_filename(
        out / derivative_path({**entities, "desc": "occlusion"})
    )
    rois = pd.DataFrame([{"roi": name, "n_voxels": int((labels == value).sum()),
                          "mean_local_brainage": round(float(local[labels == value].mean()), 4)}
                         for value, name in ((1, "Left region"), (2, "Right region"),
                                             (3, "Rest of brain"))])  # fmt:skip
    rois.to_csv(out / derivative_path({**ents, "desc": "roi", "suffix": "brainage",
                                       "extension": ".tsv"}), sep="\t", index=False)  # fmt:skip
