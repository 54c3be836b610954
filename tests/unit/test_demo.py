"""The demo's closing table: each scan's error and the planted effect, from the group outputs."""

import pandas as pd
import pytest

from bids_brainage.demo import DEMO_DATASET, describe_demo, error_table

MODEL = "m"


def group_outputs(tmp_path):
    group = tmp_path / "group"
    group.mkdir()
    pd.DataFrame({
        "participant_id": ["sub-IXI080", "sub-IXI162", "sub-IXI162", "sub-IXI175"],
        "session_id": ["ses-1", "ses-1", "ses-2", "ses-1"], "group": ["HC", "HC", "HC", "PT"],
        "age": [21.2, 50.52, 50.52, 72.27], "qc_flags": ["low_resolution", None, None, None],
        f"{MODEL}_predicted_age": [25.2, 48.52, 49.02, 80.27],
        f"{MODEL}_brain_pad_corrected": [3.0, -1.0, -0.5, 6.0],
    }).to_csv(group / "group_scans.tsv", sep="\t", index=False, na_rep="n/a")  # fmt:skip
    pd.DataFrame({"model": [MODEL], "measure": ["brain_pad_corrected"], "group1": ["PT"],
                  "group2": ["HC"], "difference": [6.5], "cohens_d": [1.9]}).to_csv(
        group / "group_desc-groups_stats.tsv", sep="\t", index=False)  # fmt:skip
    return tmp_path


def test_errors_are_brain_age_minus_age(tmp_path):
    scans = pd.read_csv(group_outputs(tmp_path) / "group" / "group_scans.tsv", sep="\t")
    table = error_table(scans, MODEL)
    assert table["error"].tolist() == pytest.approx([4.0, -2.0, -1.5, 8.0])


def test_demo_lines_give_the_control_error_the_effect_and_the_rescan(tmp_path):
    lines = describe_demo(group_outputs(tmp_path), MODEL)
    assert any(line.startswith("sub-IXI175 ses-1") and "+8.0" in line for line in lines)
    # controls: |4.0|, |-2.0|, |-1.5| -> 2.5
    assert "mean absolute error on the 3 control scans: 2.5 y" in "\n".join(lines)
    assert any("PT vs HC corrected brain-PAD difference +6.5 y, Cohen's d 1.90" in line
               for line in lines)  # fmt:skip
    assert any("48.5 and 49.0 y, 0.5 y apart" in line for line in lines)
    assert any("describe the input only" in line for line in lines)


def test_the_demo_dataset_ships_in_the_package():
    names = {p.name for p in DEMO_DATASET.iterdir()}
    assert {"dataset_description.json", "participants.tsv", "README"} <= names
    participants = pd.read_csv(str(DEMO_DATASET / "participants.tsv"), sep="\t")
    assert set(participants["group"]) == {"HC", "PT"} and participants["age"].between(20, 80).all()
