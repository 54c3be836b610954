"""Out-of-distribution flags on each prediction: ages outside the training range, failed QC,
a contrast unlike T1w."""

from __future__ import annotations

import pytest

from bids_brainage.group.training import contrast_range
from bids_brainage.models.predict import prediction_flags
from bids_brainage.preprocessing.qc import derive_flags, gm_wm_peak_ratio

CARD = {"training_data": {"age": {"min": 20.17, "max": 81.94}}}


def test_ages_outside_the_training_range_are_flagged():
    assert prediction_flags(CARD, 45.0, 50.0) == []
    assert prediction_flags(CARD, 9.0, 25.0) == ["age_outside_training_range"]
    assert prediction_flags(CARD, 95.0, 79.0) == ["age_outside_training_range"]
    assert prediction_flags(CARD, None, 85.0) == ["prediction_outside_training_range"]
    assert prediction_flags({}, 5.0, 5.0) == []  # a card without ages cannot say


def test_failed_qc_and_contrast_travel_into_the_prediction():
    assert prediction_flags(CARD, 45.0, 50.0, ["low_resolution"]) == []
    assert prediction_flags(CARD, 45.0, 50.0, ["registration_failed"]) == ["failed_qc"]
    assert prediction_flags(CARD, 45.0, 50.0, ["unlike_t1w_contrast"]) == [
        "unlike_training_contrast"
    ]
    # stripped input is less certain than a head when N4 corrects the head (round 8's
    # benchmark: up to 7.7 y), though not failed QC; N4 again inside the brain gives both one
    # path (round 18: 2.1 y at most), so a bundle trained on it does not flag it
    stripped = ["skull_stripped_input"]
    assert prediction_flags(CARD, 45.0, 50.0, stripped) == stripped
    head = {"bias_correction": "head"}
    assert prediction_flags(CARD, 45.0, 50.0, stripped, preprocessing=head) == stripped
    brain_card = {**CARD, "contract": {"bias_correction": "brain"}}
    in_brain = {"bias_correction": "brain"}
    assert prediction_flags(brain_card, 45.0, 50.0, stripped, preprocessing=in_brain) == []


def test_contrast_outside_the_training_scans_range_is_flagged():
    outside = "contrast_outside_training_range"
    card = {"training_data": {**CARD["training_data"],
                              "contrast": contrast_range([0.612, 0.70, float("nan"), 0.742])}}
    assert card["training_data"]["contrast"]["gm_wm_peak_ratio"] == {
        "min": 0.612, "max": 0.742, "median": 0.70, "n": 3}  # NaN: not measured, left out
    # within 0.05 of the range: what copies of one scan move it by (round 11's benchmark)
    assert prediction_flags(card, 45.0, 50.0, peak_ratio=0.612) == []
    assert prediction_flags(card, 45.0, 50.0, peak_ratio=0.742 + 0.049) == []
    assert prediction_flags(card, 45.0, 50.0, peak_ratio=0.612 - 0.049) == []
    assert prediction_flags(card, 45.0, 50.0, peak_ratio=0.742 + 0.051) == [outside]
    # IXI175 (log-scale run): 9 SD beyond the 127 training scans (docs/benchmarks.md)
    ixi175 = gm_wm_peak_ratio({"gm_peak": 439.2498, "wm_peak": 481.5174})
    assert ixi175 == pytest.approx(0.912, abs=1e-3)
    assert prediction_flags(card, 45.0, 50.0, peak_ratio=ixi175) == [outside]
    assert prediction_flags(card, 45.0, 50.0, peak_ratio=0.55) == [outside]
    assert prediction_flags(card, 45.0, 50.0, peak_ratio=None) == []  # not measured
    assert prediction_flags(CARD, 45.0, 50.0, peak_ratio=0.95) == []  # an older card: no range
    assert contrast_range([]) == {} and contrast_range([None, float("nan")]) == {}
    assert gm_wm_peak_ratio({}) is None and gm_wm_peak_ratio({"gm_peak": 1.0, "wm_peak": 0}) is None


def test_contrast_to_noise_below_the_training_scans_is_flagged():
    low = "contrast_to_noise_below_training_range"
    # the shipped default's 127 training scans: lowest CNR 2.800 (IXI212)
    card = {"training_data": {**CARD["training_data"],
                              "contrast": contrast_range([0.7, 0.7], [2.8, 5.5, None])}}
    assert card["training_data"]["contrast"]["cnr_gm_wm"] == {
        "min": 2.8, "max": 5.5, "median": 4.15, "n": 2}
    # 15 % below the lowest is tolerated: storage-only copies lowered the CNR by up to 13 %
    assert prediction_flags(card, 45.0, 50.0, cnr=2.8 * 0.851) == []
    assert prediction_flags(card, 45.0, 50.0, cnr=2.8 * 0.849) == [low]
    assert prediction_flags(card, 45.0, 50.0, cnr=9.0) == []  # higher is not flagged
    # IXI175, held out: 2.28, the lowest of all 139 IXI scans; read 20 y young by the default
    assert prediction_flags(card, 72.0, 51.6, cnr=2.282) == [low]
    assert prediction_flags(card, 45.0, 50.0, cnr=float("nan")) == []  # too few core voxels
    assert prediction_flags(card, 45.0, 50.0, cnr=None) == []
    older = {"training_data": {**CARD["training_data"], "contrast": contrast_range([0.7])}}
    assert prediction_flags(older, 45.0, 50.0, cnr=0.5) == []  # a card without the range
    assert "cnr_gm_wm" not in contrast_range([0.7], [None, float("nan")])


def test_inputs_coarser_than_the_working_grid_are_flagged():
    card = {**CARD, "contract": {"working_voxel_mm": 2.0}}
    coarse = "voxels_coarser_than_training"
    assert prediction_flags(card, 45.0, 50.0, voxel_mm=[1.0, 1.0, 1.0]) == []
    assert prediction_flags(card, 45.0, 50.0, voxel_mm=[2.0, 2.0, 2.5]) == []  # 1.25 times
    assert prediction_flags(card, 45.0, 50.0, voxel_mm=[3.0, 3.0, 3.0]) == [coarse]
    assert prediction_flags(card, 45.0, 50.0, voxel_mm=[1.0, 1.0, 3.0]) == [coarse]
    assert prediction_flags(CARD, 45.0, 50.0, voxel_mm=[3.0, 3.0, 3.0]) == []  # no contract


def test_contrast_flag_from_tissue_peaks():
    t1w = {"measures": {"gm_peak": 348.4, "wm_peak": 486.0}}  # IXI012: ratio 0.72
    t2w = {"measures": {"gm_peak": 520.0, "wm_peak": 410.0}}  # GM brighter than WM
    assert "unlike_t1w_contrast" not in derive_flags(t1w)
    assert "unlike_t1w_contrast" in derive_flags(t2w)


def test_preprocessing_unlike_the_training_scans_is_flagged():
    card = {"contract": {"brain_extraction": "deepbet"}}  # trained before the head grid
    assert prediction_flags(card, 40.0, 40.0, preprocessing={"brain_extraction": "deepbet",
                            "field_of_view": "stored"}) == []  # fmt:skip
    assert prediction_flags(
        card, 40.0, 40.0, preprocessing={"brain_extraction": "template", "field_of_view": "head"}
    ) == [  # fmt:skip
        "brain_extraction_unlike_training",
        "field_of_view_unlike_training",
    ]
    newer = {"contract": {"brain_extraction": "deepbet", "field_of_view": "head"}}
    assert prediction_flags(newer, 40.0, 40.0, preprocessing={"field_of_view": "head"}) == []


def test_denoising_unlike_the_training_scans_is_flagged():
    older = {"contract": {"intensity_scale": "linear"}}  # trained before the choice: none
    assert prediction_flags(older, 40.0, 40.0, preprocessing={"denoising": "none"}) == []
    assert prediction_flags(older, 40.0, 40.0, preprocessing={"denoising": "rician"}) == [
        "denoising_unlike_training"
    ]
    newer = {"contract": {"denoising": "rician"}}
    assert prediction_flags(newer, 40.0, 40.0, preprocessing={"denoising": "none"}) == [
        "denoising_unlike_training"
    ]


def test_intensity_scale_unlike_the_training_scans_is_flagged():
    older = {"contract": {"field_of_view": "head"}}  # trained before log segmentation: linear
    assert prediction_flags(older, 40.0, 40.0,
                            preprocessing={"intensity_scale": "linear"}) == []  # fmt:skip
    assert prediction_flags(
        older, 40.0, 40.0, preprocessing={"intensity_scale": "log"}
    ) == ["intensity_scale_unlike_training"]
    newer = {"contract": {"intensity_scale": "log"}}
    assert (
        prediction_flags(newer, 40.0, 40.0, preprocessing={"intensity_scale": "log"}) == []
    )
