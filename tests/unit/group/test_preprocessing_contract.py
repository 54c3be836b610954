"""The preprocessing a bundle is trained on goes into its contract, and the participant level
follows the contract: bundles older than a choice keep what they were trained on."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from bids_brainage.cli.workflow import resolve_preprocessing
from bids_brainage.config import NEW_PREPROCESSING, WorkflowSettings
from bids_brainage.group.training import TrainingError, preprocessing_of
from bids_brainage.models.bundle import Bundle, contract_for


def _bundle(contract: dict) -> Bundle:
    return Bundle(path=None, card={"name": "b", "kind": "tissue-linear", "contract": contract})


def test_training_records_the_one_preprocessing_of_its_scans():
    scans = pd.DataFrame({"brain_extraction": ["deepbet"] * 2, "field_of_view": ["head"] * 2,
                          "intensity_scale": ["log"] * 2,
                          "stripped_n4_grid": ["head"] * 2,
                          "denoising": ["rician"] * 2,
                          "contrast_standardisation": ["power"] * 2,
                          "bias_correction": ["brain"] * 2})  # fmt:skip
    found = preprocessing_of(scans)
    assert found == {"brain_extraction": "deepbet", "field_of_view": "head",
                     "intensity_scale": "log", "stripped_n4_grid": "head",
                     "denoising": "rician", "contrast_standardisation": "power",
                     "bias_correction": "brain"}  # fmt:skip
    contract = contract_for({"name": "MNI152NLin2009cSym", "resolution": 2}, "tissue-linear",
                            None, **found)  # fmt:skip
    assert _bundle(contract).intensity_scale == "log"
    assert _bundle(contract).preprocessed_with("stripped_n4_grid") == "head"
    assert _bundle(contract).preprocessed_with("denoising") == "rician"
    assert _bundle(contract).preprocessed_with("contrast_standardisation") == "power"
    assert _bundle(contract).preprocessed_with("bias_correction") == "brain"


def test_derivatives_from_before_a_choice_count_as_its_old_value():
    scans = pd.DataFrame({"brain_extraction": ["deepbet"], "field_of_view": ["head"]})
    assert preprocessing_of(scans)["intensity_scale"] == "linear"
    assert preprocessing_of(scans)["stripped_n4_grid"] == "brain"
    assert preprocessing_of(scans)["denoising"] == "none"
    assert preprocessing_of(scans)["contrast_standardisation"] == "none"
    assert preprocessing_of(scans)["bias_correction"] == "head"


def test_mixed_segmentation_is_refused():
    scans = pd.DataFrame({"brain_extraction": ["deepbet"] * 2, "field_of_view": ["head"] * 2,
                          "intensity_scale": ["log", "linear"]})  # fmt:skip
    with pytest.raises(TrainingError, match="intensity_scale.*--intensity-scale"):
        preprocessing_of(scans)


@pytest.mark.parametrize(("contract", "expected"), [
    ({}, {"field_of_view": "stored", "intensity_scale": "linear",
          "stripped_n4_grid": "brain", "denoising": "none"}),  # the oldest bundles
    ({"denoising": "rician"}, {"denoising": "rician", "intensity_scale": "linear"}),
    ({"field_of_view": "head"}, {"field_of_view": "head", "intensity_scale": "linear"}),
    ({"field_of_view": "head", "intensity_scale": "log"},
     {"field_of_view": "head", "intensity_scale": "log"}),
])  # fmt:skip
def test_auto_follows_the_first_bundle(contract, expected):
    settings = WorkflowSettings()
    resolve_preprocessing(settings, [_bundle(contract)])
    assert {k: getattr(settings, k) for k in expected} == expected


def test_without_bundles_auto_is_what_new_bundles_are_trained_on_and_choices_stay():
    settings = WorkflowSettings()
    resolve_preprocessing(settings, [])
    assert {k: getattr(settings, k) for k in NEW_PREPROCESSING} == NEW_PREPROCESSING
    chosen = SimpleNamespace(
        field_of_view="stored", intensity_scale="linear", stripped_n4_grid="brain",
        denoising="none", contrast_standardisation="none", bias_correction="head",
    )  # fmt:skip
    resolve_preprocessing(chosen, [_bundle({"intensity_scale": "log"})])
    assert (chosen.field_of_view, chosen.intensity_scale) == ("stored", "linear")


def test_power_contrast_keeps_the_head_correction_unless_both_are_chosen():
    """The contrast step corrects the head, so with it "auto" gives N4 in the head even where
    the bundle or new bundles correct inside the brain; both chosen are refused later."""
    settings = WorkflowSettings(contrast_standardisation="power")
    resolve_preprocessing(settings, [_bundle({"bias_correction": "brain"})])
    assert settings.bias_correction == "head"
    settings = WorkflowSettings(contrast_standardisation="power")
    resolve_preprocessing(settings, [])
    assert settings.bias_correction == "head"
    chosen = WorkflowSettings(contrast_standardisation="power", bias_correction="brain")
    resolve_preprocessing(chosen, [])
    assert chosen.bias_correction == "brain"
    plain = WorkflowSettings()
    resolve_preprocessing(plain, [_bundle({"bias_correction": "brain"})])
    assert plain.bias_correction == "brain"
