"""The group level on every shape of dataset: an exit code, the files, and the report's sections.

Each shape is built from synthetic participant-level tables and maps (no preprocessing) and
run through ``main([... "group"])``. Whatever a shape rules out is listed as skipped, with the
reason, in the console and in group.html; no traceback ever reaches the console.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bids_brainage.cli.run import main
from bids_brainage.synthetic.predictions import make_prediction_derivatives
from bids_brainage.utils.derivatives import write_failure_record


def _participants(data) -> pd.DataFrame:
    return pd.read_csv(data["bids"] / "participants.tsv", sep="\t", dtype=str)


def _save_participants(data, table: pd.DataFrame) -> None:
    table.to_csv(data["bids"] / "participants.tsv", sep="\t", index=False, na_rep="n/a")


def everyone_hc(data):
    table = _participants(data)
    _save_participants(data, table.assign(group="HC"))


def drop_column(name):
    def edit(data):
        _save_participants(data, _participants(data).drop(columns=name))

    return edit


def some_ages_missing(data):
    table = _participants(data)
    table.loc[:4, "age"] = None
    _save_participants(data, table)


def non_numeric_age(data):
    table = _participants(data)
    table.loc[0, "age"] = "forty"
    _save_participants(data, table)


def fail_qc_everywhere(data):
    for qc in data["derivatives"].rglob("*_qc.json"):
        content = json.loads(qc.read_text())
        qc.write_text(json.dumps({**content, "flags": ["registration_failed"]}))


def failed_participants(data):
    """Two scans failed at the participant level: a failure record and no derivatives."""
    for subject in ("p000", "p001"):
        for path in (data["derivatives"] / f"sub-{subject}").rglob("*"):
            if path.is_file():
                path.unlink()
        write_failure_record(data["derivatives"], f"sub-{subject}", "ValueError: broken image",
                             None)  # fmt:skip


def half_the_local_maps(data):
    for i, path in enumerate(sorted(data["derivatives"].rglob("*_desc-local_brainage.nii.gz"))):
        if i % 2:
            path.unlink()


def two_models(data):
    """Every other participant re-run with another --model."""
    for i, path in enumerate(sorted(data["derivatives"].glob("sub-*/**/*_brainage.tsv"))):
        if "_desc-" not in path.name and i % 2:
            table = pd.read_csv(path, sep="\t")
            table.assign(model="other").to_csv(path, sep="\t", index=False)


def older_version(data):
    """Derivatives of an older release: no version or template in the QC, no intervals."""
    for qc in data["derivatives"].rglob("*_qc.json"):
        content = json.loads(qc.read_text())
        content.pop("bids_brainage_version")
        content.pop("template")
        qc.write_text(json.dumps(content))
    for path in data["derivatives"].glob("sub-*/**/*_brainage.tsv"):
        if "_desc-" not in path.name:
            table = pd.read_csv(path, sep="\t")
            table.drop(columns=["interval_lower", "interval_upper"]).to_csv(
                path, sep="\t", index=False)  # fmt:skip


# name: (generator arguments, edit, exit code, group files expected, files absent,
#        texts the console's "skipped" lines and group.html must both contain)
SHAPES = {
    "controls only": (dict(n_controls=24, n_patients=0, local_maps=True), None, 0,
                      ["scans", "desc-bias_stats", "desc-roisummary_stats", "desc-agebias",
                       "desc-importance_statmap"], ["desc-groups_stats", "desc-roc_stats"],
                      ["one group only (HC; no patients)", "ROC-AUC: no patients"]),
    "everyone HC": (dict(n_controls=12, n_patients=8, local_maps=True), everyone_hc, 0,
                    ["desc-bias_stats", "desc-roisummary_stats"], ["desc-groups_stats"],
                    ["one group only (HC; no patients)"]),
    "no group column": (dict(n_controls=12, n_patients=8), drop_column("group"), 0,
                        ["desc-bias_stats"], ["desc-groups_stats", "desc-roc_stats"],
                        ["no group column (everyone counted as a control)"]),
    "patients only": (dict(n_controls=0, n_patients=15, local_maps=True), None, 0,
                      ["scans", "desc-bias_stats", "desc-roisummary_stats"],
                      ["desc-groups_stats", "desc-roc_stats", "desc-agebias"],
                      ["age-bias correction: 0 control(s)", "ROC-AUC: no controls",
                       "one group only (PT; no controls)"]),
    "one patient group": (dict(n_controls=16, n_patients=10), None, 0,
                          ["desc-groups_stats", "desc-roc_stats"], [], []),
    "several patient groups": (dict(n_controls=16, n_patients=12,
                                    patient_groups=("AD", "MCI")), None, 0,
                               ["desc-groups_stats", "desc-roc_stats"], [], []),
    "some ages missing": (dict(n_controls=16, n_patients=8, n_rescans=4), some_ages_missing, 0,
                          ["desc-groups_stats", "desc-reliability_stats"], [],
                          ["included scan(s) have no age: they count for the test-retest ICC only"]),
    "no age column": (dict(n_controls=10, n_patients=5, n_rescans=4), drop_column("age"), 0,
                      ["scans", "desc-reliability_stats"], ["desc-groups_stats"],
                      ["no included scan has an age"]),
    "non-numeric age": (dict(n_controls=14, n_patients=6), non_numeric_age, 1,
                        ["desc-groups_stats"], [], []),
    "one participant": (dict(n_controls=1, n_patients=0, local_maps=True), None, 0,
                        ["scans", "desc-bias_stats"], ["desc-groups_stats"],
                        ["1 control(s) with an age, fewer than the 10"]),
    "two participants": (dict(n_controls=1, n_patients=1), None, 0,
                         ["scans", "desc-groups_stats", "desc-roc_stats"], [],
                         ["fewer than 2 participants", "bootstrap CI with 1 patient(s)"]),
    "one site": (dict(n_controls=12, n_patients=6, sites=("A",)), None, 0,
                 ["desc-groups_stats"], [], []),
    "many sites": (dict(n_controls=20, n_patients=10, sites=tuple("ABCDEFG")), None, 0,
                   ["desc-groups_stats"], [], []),
    "sessions without rescans": (dict(n_controls=12, n_patients=6, always_session=True), None,
                                 0, ["desc-groups_stats"], ["desc-reliability_stats"],
                                 ["test-retest ICC: 0 participant(s) with a rescan"]),
    "a rescan for everyone": (dict(n_controls=10, n_patients=5, n_rescans=15,
                                   local_maps=True), None, 0,
                              ["desc-reliability_stats", "desc-icc_statmap"], [], []),
    "every scan excluded by QC": (dict(n_controls=8, n_patients=4), fail_qc_everywhere, 0,
                                  ["scans"], ["desc-bias_stats"],
                                  ["all 12 scan(s) excluded (QC: registration_failed: 12)"]),
    "some failed at the participant level": (dict(n_controls=12, n_patients=6),
                                             failed_participants, 0, ["desc-groups_stats"], [],
                                             []),
    "local maps for some scans": (dict(n_controls=16, n_patients=8, local_maps=True),
                                  half_the_local_maps, 0, ["desc-PTvsHCt_statmap"], [],
                                  ["voxel-wise statistics use the 12 of 24 scans"]),
    "bundles differ between scans": (dict(n_controls=24, n_patients=12), two_models, 0,
                                     ["desc-bias_stats", "desc-groups_stats"], [],
                                     ["model other: predictions for 18 of 36"]),
    "older derivatives": (dict(n_controls=12, n_patients=6), older_version, 0,
                          ["desc-groups_stats"], [],
                          ["derivatives written by bids_brainage an unknown (older) version"]),
}  # fmt:skip


@pytest.mark.parametrize("shape", SHAPES)
def test_group_level_shape(shape, tmp_path, capsys):
    kwargs, edit, expected_code, present, absent, skipped = SHAPES[shape]
    kwargs = {"n_rescans": 0, "seed": 11, **kwargs}
    data = make_prediction_derivatives(tmp_path, **kwargs)
    if edit:
        edit(data)
    code = main([str(data["bids"]), str(data["derivatives"]), "group", "-w",
                 str(tmp_path / "work"), "--nprocs", "1"])  # fmt:skip
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == expected_code, err
    group = data["derivatives"] / "group"
    names = [p.name for p in group.glob("*") if p.is_file()]
    for part in present:
        assert any(part in name for name in names), (part, names)
    for part in absent:
        assert not any(part in name for name in names), (part, names)
    page = (data["derivatives"] / "group.html").read_text()
    console_skipped = [line for line in out.splitlines() if "skipped:" in line]
    for text in skipped:
        assert any(text in line for line in console_skipped), (text, console_skipped)
        assert text in page.replace("&#x27;", "'"), text
    if skipped:
        assert "<h2>Skipped statistics</h2>" in page
    assert not list(data["derivatives"].glob(".group*")), "staging left behind"


def test_several_patient_groups_compare_every_pair(tmp_path):
    data = make_prediction_derivatives(tmp_path, 16, 12, patient_groups=("AD", "MCI"),
                                       n_rescans=0, seed=11)  # fmt:skip
    assert main([str(data["bids"]), str(data["derivatives"]), "group", "-w",
                 str(tmp_path / "work")]) == 0  # fmt:skip
    group = data["derivatives"] / "group"
    pairs = pd.read_csv(group / "group_desc-groups_stats.tsv", sep="\t")
    corrected = pairs[pairs["measure"] == "brain_pad_corrected"]
    assert sorted(zip(corrected.group1, corrected.group2, strict=True)) == [
        ("AD", "HC"), ("MCI", "AD"), ("MCI", "HC")]  # fmt:skip
    roc = pd.read_csv(group / "group_desc-roc_stats.tsv", sep="\t")
    assert sorted(roc["group"]) == ["AD", "MCI"] and (roc["n_controls"] == 16).all()


def test_non_numeric_age_is_one_line_and_keeps_the_participant_group(tmp_path, capsys):
    data = make_prediction_derivatives(tmp_path, 14, 6, n_rescans=0, seed=11)
    non_numeric_age(data)
    assert main([str(data["bids"]), str(data["derivatives"]), "group", "-w",
                 str(tmp_path / "work")]) == 1  # fmt:skip
    err = [line for line in capsys.readouterr().err.splitlines() if "forty" in line]
    assert len(err) == 1 and "participants.tsv" in err[0] and "sub-p000" in err[0]
    scans = pd.read_csv(data["derivatives"] / "group" / "group_scans.tsv", sep="\t",
                        na_values="n/a").set_index("participant_id")  # fmt:skip
    assert pd.isna(scans.at["sub-p000", "age"]) and scans.at["sub-p000", "group"] == "HC"


def test_failed_participants_are_listed(tmp_path, capsys):
    data = make_prediction_derivatives(tmp_path, 12, 6, n_rescans=0, seed=11)
    failed_participants(data)
    assert main([str(data["bids"]), str(data["derivatives"]), "group", "-w",
                 str(tmp_path / "work")]) == 0  # fmt:skip
    err = capsys.readouterr().err
    page = (data["derivatives"] / "group.html").read_text()
    for subject in ("sub-p000", "sub-p001"):
        line = next(line for line in err.splitlines() if line.endswith("not in the statistics")
                    and subject in line)  # fmt:skip
        assert "failed at the participant level (ValueError: broken image)" in line
        assert f"{subject}: failed at the participant level" in page
    scans = pd.read_csv(data["derivatives"] / "group" / "group_scans.tsv", sep="\t")
    assert len(scans) == 16


def test_controls_only_bias_matches_a_hand_fit(tmp_path):
    """The controls-only bias line is scipy's regression of PAD on age over every control."""
    from scipy import stats

    data = make_prediction_derivatives(tmp_path, 24, 0, n_rescans=0, seed=12)
    assert main([str(data["bids"]), str(data["derivatives"]), "group", "-w",
                 str(tmp_path / "work")]) == 0  # fmt:skip
    bias = pd.read_csv(data["derivatives"] / "group" / "group_desc-bias_stats.tsv", sep="\t")
    truth = data["participants"].merge(
        data["scans"].drop(columns="session"), on="participant_id")  # fmt:skip
    fit = stats.linregress(truth["age"], truth["predicted_age"] - truth["age"])
    # the table gives statistics to 4 significant digits: a relative error under 5e-4
    assert bias.at[0, "alpha"] == pytest.approx(fit.slope, rel=5e-4)
    assert bias.at[0, "beta"] == pytest.approx(fit.intercept, rel=5e-4)
    assert bias.at[0, "n_reference"] == 24


def test_planted_site_offsets_are_recovered_within_their_standard_error(tmp_path, capsys):
    """Three sites with scanner offsets 0, +5 and -3 years, a fourth with 6 controls only;
    each difference of recovered offsets lies within 2 standard errors (95 %) of the planted."""
    planted = {"A": 0.0, "B": 5.0, "C": -3.0, "D": 0.0}
    data = make_prediction_derivatives(tmp_path, 240, 40, sites=("A", "B", "C"),
                                       site_offsets=planted, n_rescans=0, seed=31)  # fmt:skip
    table = _participants(data)
    table.loc[table.index[:6], "site"] = "D"  # six controls moved to a small fourth site
    _save_participants(data, table)
    for qc in data["derivatives"].rglob("*_qc.json"):
        content = json.loads(qc.read_text())
        subject = "sub-" + content["scan"]["subject"]
        content["scan"]["site"] = table.set_index("participant_id").at[subject, "site"]
        qc.write_text(json.dumps(content))
    assert main([str(data["bids"]), str(data["derivatives"]), "group", "-w",
                 str(tmp_path / "work")]) == 0  # fmt:skip
    out = capsys.readouterr().out
    sites = pd.read_csv(data["derivatives"] / "group" / "group_desc-sitecalibration_stats.tsv",
                        sep="\t").set_index("site")  # fmt:skip
    assert list(sites["mode"]) == ["site line"] * 3 + ["pooled"]
    # offsets are relative to the pooled line: compare their differences with the planted ones
    for a, b in (("B", "A"), ("C", "A"), ("B", "C")):
        se = np.hypot(sites.at[a, "offset_se"], sites.at[b, "offset_se"])
        recovered = sites.at[a, "offset"] - sites.at[b, "offset"]
        assert abs(recovered - (planted[a] - planted[b])) <= 2 * se, (a, b, recovered, se)
    assert "fewer than 20" in sites.at["D", "note"] and "site calibration at D" in out
    scans = pd.read_csv(data["derivatives"] / "group" / "group_scans.tsv", sep="\t")
    controls = scans[(scans["group"] == "HC") & (scans["site"] != "D")]
    by_site = controls.groupby("site")["synthetic_brain_pad_corrected"].mean()
    # each site's controls centred by their own line (the table gives years to 0.01)
    assert by_site.abs().max() <= 0.005
    assert set(scans.loc[scans["site"] == "D", "synthetic_calibration"]) == {"pooled"}
    inside = controls["synthetic_predicted_age"].between(
        controls["synthetic_normative_lower"], controls["synthetic_normative_upper"]
    )
    assert 0.85 <= inside.mean() <= 0.97  # the 90 % range holds on the controls it came from
