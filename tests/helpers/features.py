"""Synthetic participant-level derivatives with a planted age signal, for model tests.

Writing the features directly (template-space GM/WM/CSF maps, v2 T1w, histogram, QC JSON) skips
preprocessing, so every model kind can be trained in seconds. The brains come from
``anatomy.age_brain`` on a coarse grid: cortical thinning, ventricles and hippocampal loss grow
with age, so age is recoverable; each site adds its own v2 intensity offset and noise.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_brainage.preprocessing.features import histogram_table
from bids_brainage.synthetic.anatomy import age_brain, load_template_anatomy
from bids_brainage.utils.derivatives import derivative_path, write_derivatives_root
from bids_brainage.utils.templates import FALLBACK_TEMPLATE

V2_LEVELS = {"csf": 0.15, "gm": 0.5, "wm": 0.8}
SITE_OFFSETS = {"A": 0.0, "B": 0.03, "C": -0.03}


def make_feature_derivatives(
    root: Path,
    n_subjects: int = 30,
    *,
    voxel_mm: float = 6.0,
    sites=("A", "B"),
    seed: int = 0,
    ages=(20.0, 80.0),
    groups: dict[str, str] | None = None,
) -> dict:
    """``root/bids`` (participants.tsv only) and ``root/derivatives`` with features.

    Returns the paths and the ground-truth table.
    """
    rng = np.random.default_rng(seed)
    anatomy = load_template_anatomy(voxel_mm)
    bids, out = Path(root) / "bids", Path(root) / "derivatives"
    bids.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(
        json.dumps({"Name": "synthetic features", "BIDSVersion": "1.10.0", "License": "CC0"})
    )
    resolution = f"{voxel_mm:g}"
    rows = []
    for index in range(n_subjects):
        subject = f"s{index:03d}"
        age = float(rng.uniform(*ages))
        site = sites[index % len(sites)]
        brain = age_brain(anatomy, age, rng)
        inside = anatomy.brain > 0.5
        gm = np.clip(brain.gm + rng.normal(0, 0.02, brain.gm.shape) * inside, 0, None)
        wm = np.clip(brain.wm + rng.normal(0, 0.02, brain.gm.shape) * inside, 0, None)
        # CSF noise from its own stream: the other maps stay those the tests were tuned on
        csf_noise = np.random.default_rng([seed, index]).normal(0, 0.02, brain.gm.shape)
        csf = np.clip(brain.csf + csf_noise * inside, 0, None)
        v2 = (V2_LEVELS["csf"] * brain.csf + V2_LEVELS["gm"] * brain.gm
              + V2_LEVELS["wm"] * brain.wm + SITE_OFFSETS.get(site, 0.0)
              + rng.normal(0, 0.03, brain.gm.shape))  # fmt:skip
        mask = anatomy.brain > 0.5
        v2 = np.where(mask, v2, 0).astype(np.float32)
        ents = {"subject": subject}
        tpl = {**ents, "space": FALLBACK_TEMPLATE, "resolution": resolution}
        files = {
            "GM": ({**tpl, "label": "GM", "desc": "modulated", "suffix": "probseg"}, gm),
            "WM": ({**tpl, "label": "WM", "desc": "modulated", "suffix": "probseg"}, wm),
            "CSF": ({**tpl, "label": "CSF", "desc": "modulated", "suffix": "probseg"}, csf),
            "t1w": ({**tpl, "desc": "normv2", "suffix": "T1w"}, v2),
        }
        for entities, data in files.values():
            path = out / derivative_path({**entities, "extension": ".nii.gz"})
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data.astype(np.float32), anatomy.affine), path)
        table, _ = histogram_table(v2, mask)
        table.to_csv(
            out
            / derivative_path(
                {**ents, "desc": "histogram", "suffix": "features", "extension": ".tsv"}
            ),
            sep="\t",
            index=False,
        )
        qc = {"scan": {"subject": subject, "site": site, "site_source": "participants.tsv",
                       "source": f"sub-{subject}/anat/sub-{subject}_T1w.nii.gz"},
              "template": {"name": FALLBACK_TEMPLATE, "resolution": int(voxel_mm),
                           "source": "synthetic"}, "flags": [],
              # GM/WM peak ratios 0.650-0.689 and CNRs 4.0-5.95 by index: no draw, the maps
              # stay the same
              "measures": {"gm_peak": 325.0 + 0.5 * (index % 40), "wm_peak": 500.0,
                           "cnr_gm_wm": 4.0 + 0.05 * (index % 40)}}  # fmt:skip
        (out / derivative_path({**ents, "suffix": "qc", "extension": ".json"})).write_text(
            json.dumps(qc)
        )
        group = (groups or {}).get(subject, "HC")
        rows.append({"participant_id": f"sub-{subject}", "age": round(age, 2), "sex": "F",
                     "site": site, "group": group})  # fmt:skip
    truth = pd.DataFrame(rows)
    truth.to_csv(bids / "participants.tsv", sep="\t", index=False)
    write_derivatives_root(out, bids)
    return {"bids": bids, "derivatives": out, "truth": truth, "affine": anatomy.affine}
