"""The synthetic data generator: valid BIDS, effects that go the right way, truth that matches."""

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from bids_brainage.synthetic.acquisition import DEFAULT_SITES, Pose, Site, acquire
from bids_brainage.synthetic.anatomy import (
    TEMPORAL_LOBE,
    age_brain,
    effective_age_map,
    load_template_anatomy,
)
from bids_brainage.utils.bids import collect_t1w, run_bids_validator


@pytest.fixture(scope="module")
def anatomy():
    return load_template_anatomy(2.0)


def test_template_anatomy_is_brain_sized(anatomy):
    voxel_ml = anatomy.voxel_mm**3 / 1000
    gm, wm, csf = (m.sum() * voxel_ml for m in (anatomy.gm, anatomy.wm, anatomy.csf))
    assert 700 < gm < 1200 and 450 < wm < 900 and 100 < csf < 400
    np.testing.assert_array_less(anatomy.gm + anatomy.wm + anatomy.csf, 1.0 + 1e-5)
    assert anatomy.region(("Hippocampus",)).sum() * voxel_ml == pytest.approx(8, rel=0.5)


def test_ageing_loses_grey_matter_and_grows_ventricles(anatomy):
    volumes = []
    for age in (20, 40, 60, 80):
        brain = age_brain(anatomy, age, np.random.default_rng(0))
        volumes.append(brain.volumes_ml(anatomy.voxel_mm))
    gm = [v["gm_ml"] for v in volumes]
    csf = [v["csf_ml"] for v in volumes]
    assert gm == sorted(gm, reverse=True) and csf == sorted(csf)
    assert csf[-1] - csf[0] > 50  # a visible effect over 60 years
    total = [v["gm_ml"] + v["wm_ml"] + v["csf_ml"] for v in volumes]
    assert np.ptp(total) < 1.0  # tissue turns into CSF; the intracranial volume is kept


def test_lesions_appear_only_in_later_life(anatomy):
    young = age_brain(anatomy, 30, np.random.default_rng(0))
    old = age_brain(anatomy, 80, np.random.default_rng(0))
    assert young.n_lesions == 0 and young.lesions.max() == 0
    assert old.n_lesions > 0 and old.lesions.max() > 0.5


def test_patient_effect_is_stronger_in_temporal_lobe(anatomy):
    ages = effective_age_map(anatomy, 70, patient_years=6, patient_gain=2)
    temporal = anatomy.region(TEMPORAL_LOBE)
    assert ages[~temporal].min() >= 76 - 1e-4
    assert np.allclose(ages[temporal], 82)
    control = age_brain(anatomy, 70, np.random.default_rng(1))
    patient = age_brain(anatomy, 70, np.random.default_rng(1), patient_years=6)
    hippocampus = anatomy.region(("Hippocampus",))
    assert patient.gm[hippocampus].sum() < 0.95 * control.gm[hippocampus].sum()


def test_orientations_store_the_same_brain(anatomy):
    brain = age_brain(anatomy, 50, np.random.default_rng(0))
    images = []
    for codes in ("RAS", "LPS", "PSR"):
        site = Site("s", orientation=codes, noise=0.0, bias_amplitude=0.0, dtype="float32")
        img = acquire(brain.image, anatomy.affine, site, Pose(), np.random.default_rng(0))
        assert "".join(nb.aff2axcodes(img.affine)) == codes
        images.append(nb.as_closest_canonical(img))
    for img in images[1:]:
        np.testing.assert_allclose(img.affine, images[0].affine, atol=1e-4)
        np.testing.assert_allclose(img.get_fdata(), images[0].get_fdata(), rtol=1e-4, atol=1e-2)


def test_dataset_is_valid_bids_with_matching_truth(synthetic_dataset):
    bids_dir, truth = synthetic_dataset
    assert run_bids_validator(bids_dir) == []
    scans = collect_t1w(bids_dir)
    assert len(scans) == len(truth) == 5  # four participants, one rescanned
    participants = pd.read_csv(bids_dir / "participants.tsv", sep="\t")
    assert list(participants.columns) == ["participant_id", "age", "sex", "group", "site"]
    assert (truth.groupby("participant_id")["age"].nunique() == 1).all()
    patients = truth[truth["group"] == "PT"]
    assert (patients["effective_age"] == patients["age"] + 6).all()
    rescanned = truth[truth["participant_id"] == "sub-01"]
    assert rescanned["gm_ml"].nunique() == 1  # same brain, scanned twice
    stored = {nb.load(s.path).get_data_dtype().name for s in scans}
    assert {"uint8", "int16"} <= stored  # siteA stores uint8 + scaling, siteB int16


def test_site_can_live_in_sidecars(tmp_path):
    from bids_brainage.synthetic.dataset import make_dataset

    make_dataset(tmp_path, n_subjects=2, n_patients=0, n_rescans=0, site_in="sidecar",
                 sites=DEFAULT_SITES[1:3])  # fmt:skip
    scans = collect_t1w(tmp_path / "bids")
    assert [(s.site, s.site_source) for s in scans] == [("siteB", "sidecar"), ("siteC", "sidecar")]
