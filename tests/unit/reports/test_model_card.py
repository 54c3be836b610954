"""The model card names the preprocessing a bundle was trained on."""

from bids_brainage.reports.model_card import PREPROCESSING_WORDS, preprocessing_line


def test_the_card_names_each_preprocessing_choice_and_the_old_defaults():
    line = preprocessing_line({"field_of_view": "head", "intensity_scale": "log-registration",
                               "denoising": "rician"})  # fmt:skip
    assert "registration on the log intensities, Atropos on the intensities " \
           "(`log-registration`)" in line  # fmt:skip
    assert "Rician non-local means before N4 (`rician`)" in line
    assert "each scan on its head plus 16 mm (`head`)" in line
    # a contract without the key: what bundles trained before the choice were trained on
    assert "skull-stripped input: N4 on its own grid (`brain`)" in line
    assert line.count("(`") == len(PREPROCESSING_WORDS)
