"""participants.tsv, site resolution, sidecar inheritance, filters and T1w collection."""

import json
from pathlib import Path

import pytest

from bids_brainage.utils.bids import (
    InputError,
    collect_t1w,
    load_filters,
    parse_age,
    read_participants,
    read_sidecar,
    site_from_sidecar,
    strip_prefix,
)
from tests.helpers.skeleton import make_skeleton


@pytest.mark.parametrize(
    ("value", "expected"), [("38.5", 38.5), ("0", 0.0), ("n/a", None), ("", None), ("NA", None)]
)
def test_parse_age_accepts_numbers_and_missing(value, expected):
    assert parse_age(value, "sub-01", Path("participants.tsv")) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("forty", "'forty', which is not a number"), ("-3", "outside 0-130"),
     ("200", "outside 0-130"), ("inf", "outside")],
)  # fmt:skip
def test_parse_age_rejects_with_participant_and_value(value, fragment):
    with pytest.raises(InputError) as err:
        parse_age(value, "sub-07", Path("/d/participants.tsv"))
    message = str(err.value)
    assert fragment in message and "sub-07" in message and "/d/participants.tsv" in message
    assert "\n" not in message


def test_read_participants_isolates_bad_rows(tmp_path):
    root = make_skeleton(
        tmp_path,
        [],
        "participant_id\tage\tsex\tgroup\tsite\n"
        "sub-01\t30.5\tF\tHC\tA\n"
        "sub-02\tforty\tM\tHC\tA\n"
        "sub-03\tn/a\tn/a\tPT\tB\n"
        "sub-04\t50\tM\tHC\tB\n"
        "sub-04\t51\tM\tHC\tB\n",
    )
    demographics, errors = read_participants(root)
    assert demographics["01"].age == 30.5 and demographics["01"].site == "A"
    assert demographics["03"].age is None and demographics["03"].sex is None
    assert demographics["03"].group == "PT"
    assert set(errors) == {"02", "04"}
    assert "'forty'" in errors["02"] and "appears 2 times" in errors["04"]


def test_read_participants_without_table_or_id_column(tmp_path):
    assert read_participants(make_skeleton(tmp_path / "a", [])) == ({}, {})
    root = make_skeleton(tmp_path / "b", [], "id\tage\n01\t3\n")
    with pytest.raises(InputError, match="no participant_id column"):
        read_participants(root)


def test_strip_prefix():
    assert strip_prefix("sub-01", "sub") == strip_prefix("01", "sub") == "01"


def test_sidecar_inheritance_and_broken_json(tmp_path):
    root = make_skeleton(tmp_path, ["sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"])
    (root / "T1w.json").write_text(json.dumps({"Manufacturer": "GE", "InstitutionName": "top"}))
    (root / "sub-01" / "sub-01_T1w.json").write_text(json.dumps({"InstitutionName": "subject"}))
    image = root / "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"
    (root / "sub-01/ses-1/anat/sub-01_ses-1_T1w.json").write_text("{not json")
    metadata, warnings = read_sidecar(root, image)
    assert metadata == {"Manufacturer": "GE", "InstitutionName": "subject"}  # nearer wins
    assert len(warnings) == 1 and "not valid JSON" in warnings[0]


def test_site_from_sidecar_prefers_institution():
    assert site_from_sidecar({"InstitutionName": "HH", "Manufacturer": "Philips"}) == "HH"
    meta = {
        "Manufacturer": "Philips",
        "ManufacturersModelName": "Intera",
        "MagneticFieldStrength": 3,
    }
    assert site_from_sidecar(meta) == "Philips Intera 3T"
    assert site_from_sidecar({}) is None


def test_site_resolution_order(tmp_path):
    files = [
        "sub-01/anat/sub-01_T1w.nii.gz",
        "sub-02/ses-a/anat/sub-02_ses-a_T1w.nii.gz",
        "sub-03/anat/sub-03_T1w.nii.gz",
        "sub-04/anat/sub-04_T1w.nii.gz",
        "sub-05/anat/sub-05_T1w.nii.gz",
    ]
    root = make_skeleton(
        tmp_path, files,
        "participant_id\tage\tsite\nsub-01\t20\tfromtable\nsub-02\t21\tn/a\nsub-03\t22\tn/a\n"
        "sub-04\t23\tn/a\nsub-05\t24\tn/a\n",
    )  # fmt:skip
    (root / "sub-02/sub-02_sessions.tsv").write_text("session_id\tsite\nses-a\tfromsessions\n")
    (root / "sub-03/sub-03_scans.tsv").write_text(
        "filename\tsite\nanat/sub-03_T1w.nii.gz\tfromscans\n"
    )
    (root / "sub-04/anat/sub-04_T1w.json").write_text(json.dumps({"InstitutionName": "fromjson"}))
    scans = {s.subject: s for s in collect_t1w(root)}
    assert [(scans[k].site, scans[k].site_source) for k in sorted(scans)] == [
        ("fromtable", "participants.tsv"),
        ("fromsessions", "sessions.tsv/scans.tsv"),
        ("fromscans", "sessions.tsv/scans.tsv"),
        ("fromjson", "sidecar"),
        ("unknown", "none"),
    ]
    assert scans["01"].age == 20.0


def test_collect_selects_by_label_session_and_filter(tmp_path):
    files = [
        "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz",
        "sub-01/ses-2/anat/sub-01_ses-2_acq-fast_T1w.nii.gz",
        "sub-01/ses-2/anat/sub-01_ses-2_run-1_T1w.nii.gz",
        "sub-01/ses-2/anat/sub-01_ses-2_run-2_T1w.nii.gz",
        "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii",
        "sub-02/ses-1/anat/sub-02_ses-1_T2w.nii.gz",
        "sub-02/ses-1/func/sub-02_ses-1_task-rest_bold.nii.gz",
    ]
    root = make_skeleton(tmp_path, files)
    keys = [s.key for s in collect_t1w(root)]
    assert keys == [
        "sub-01_ses-1", "sub-01_ses-2_acq-fast", "sub-01_ses-2_run-1", "sub-01_ses-2_run-2",
        "sub-02_ses-1",
    ]  # fmt:skip
    assert [s.key for s in collect_t1w(root, ["sub-02"])] == ["sub-02_ses-1"]
    assert [s.key for s in collect_t1w(root, ["01"], ["ses-2"])] == keys[1:4]
    only_fast = collect_t1w(root, bids_filters={"t1w": {"acquisition": "fast"}})
    assert [s.key for s in only_fast] == ["sub-01_ses-2_acq-fast"]
    assert collect_t1w(root, ["99"]) == []
    scan = collect_t1w(root, ["01"], ["1"])[0]
    assert scan.age is None and scan.site == "unknown" and scan.error is None


def test_collect_marks_participants_with_bad_rows(tmp_path):
    root = make_skeleton(
        tmp_path, ["sub-01/anat/sub-01_T1w.nii.gz", "sub-02/anat/sub-02_T1w.nii.gz"],
        "participant_id\tage\nsub-01\t-1\nsub-02\t33\n",
    )  # fmt:skip
    scans = {s.subject: s for s in collect_t1w(root)}
    assert "outside 0-130" in scans["01"].error
    assert scans["02"].error is None and scans["02"].age == 33.0


def test_load_filters(tmp_path):
    good = tmp_path / "f.json"
    good.write_text(json.dumps({"t1w": {"session": "1"}}))
    assert load_filters(good) == {"t1w": {"session": "1"}}
    assert load_filters(None) == {}
    for content, fragment in [("{oops", "cannot read"), ('{"bold": {}}', "unknown query"),
                              ('{"t1w": 3}', "maps query names")]:  # fmt:skip
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        with pytest.raises(InputError, match=fragment):
            load_filters(bad)


def test_copy_participants_keeps_only_the_chosen_ones(tmp_path):
    from bids_brainage.utils.bids import copy_participants

    source = make_skeleton(tmp_path / "src", ["sub-01/anat/sub-01_T1w.nii.gz",
                                             "sub-02/anat/sub-02_T1w.nii.gz"],
                           participants="participant_id\tage\nsub-01\t35.02\nsub-02\tn/a\n")  # fmt:skip
    target = copy_participants(source, tmp_path / "dst", ["02"])
    assert sorted(p.name for p in target.iterdir()) == [
        "dataset_description.json", "participants.tsv", "sub-02"]  # fmt:skip
    assert (target / "participants.tsv").read_text() == "participant_id\tage\nsub-02\tn/a\n"
