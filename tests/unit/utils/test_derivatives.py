"""The derivatives writer: names from one spec, sidecars, atomic writes, staged commits."""

import json
from pathlib import Path

import pytest

from bids_brainage.interfaces.bids import WriteScanDerivatives
from bids_brainage.utils.derivatives import (
    dataset_description,
    derivative_path,
    io_spec,
    write_derivatives_root,
)
from bids_brainage.utils.io import atomic_path, write_json_atomic


@pytest.mark.parametrize(
    ("entities", "expected"),
    [
        ({"subject": "01", "desc": "conform", "suffix": "T1w", "extension": ".nii.gz"},
         "sub-01/anat/sub-01_desc-conform_T1w.nii.gz"),
        ({"subject": "01", "session": "2", "run": "1", "space": "MNI152NLin2009cAsym",
          "label": "GM", "suffix": "probseg", "extension": ".nii.gz"},
         "sub-01/ses-2/anat/sub-01_ses-2_run-1_space-MNI152NLin2009cAsym_label-GM_probseg.nii.gz"),
        ({"subject": "01", "from": "T1w", "to": "MNI152NLin2009cAsym", "mode": "image",
          "suffix": "xfm", "extension": ".h5"},
         "sub-01/anat/sub-01_from-T1w_to-MNI152NLin2009cAsym_mode-image_xfm.h5"),
        ({"subject": "01", "acquisition": "mprage", "suffix": "qc", "extension": ".json"},
         "sub-01/anat/sub-01_acq-mprage_qc.json"),
        ({"suffix": "scans", "extension": ".tsv"}, "group/group_scans.tsv"),
    ],
)  # fmt:skip
def test_paths_come_from_the_spec(entities, expected):
    assert derivative_path(entities) == expected


def test_unknown_suffix_is_refused():
    with pytest.raises(ValueError, match="no derivative path pattern"):
        derivative_path({"subject": "01", "suffix": "bold", "extension": ".nii.gz"})


def _writer(tmp_path, plan, fields=(), **files):
    return WriteScanDerivatives(
        fields=sorted({*fields, *files}), staging_dir=str(tmp_path / "staging"),
        output_dir=str(tmp_path / "out"), plan=plan, qc={"flags": ["oblique"]},
        qc_entities={"subject": "01", "session": "a", "suffix": "qc", "extension": ".json"},
        **files)  # fmt:skip


def test_writer_stages_then_commits_files_sidecars_and_qc(tmp_path):
    source = tmp_path / "x.nii.gz"
    source.write_bytes(b"data")
    maps = [tmp_path / f"{t}.nii.gz" for t in ("csf", "gm")]
    for path in maps:
        path.write_bytes(path.name.encode())
    plan = [{"field": "t1w", "index": None, "meta": {"SkullStripped": False},
             "entities": {"subject": "01", "session": "a", "desc": "conform", "suffix": "T1w",
                          "extension": ".nii.gz"}},
            {"field": "probseg", "index": 1, "meta": None,
             "entities": {"subject": "01", "session": "a", "label": "GM", "suffix": "probseg",
                          "extension": ".nii.gz"}}]  # fmt:skip
    result = _writer(tmp_path, plan, t1w=str(source), probseg=[str(p) for p in maps]).run()
    anat = tmp_path / "out/sub-01/ses-a/anat"
    assert sorted(Path(f).name for f in result.outputs.out_files) == [
        "sub-01_ses-a_desc-conform_T1w.json", "sub-01_ses-a_desc-conform_T1w.nii.gz",
        "sub-01_ses-a_label-GM_probseg.nii.gz", "sub-01_ses-a_qc.json"]  # fmt:skip
    assert (anat / "sub-01_ses-a_desc-conform_T1w.nii.gz").read_bytes() == b"data"
    assert (anat / "sub-01_ses-a_label-GM_probseg.nii.gz").read_bytes() == b"gm.nii.gz"
    assert json.loads((anat / "sub-01_ses-a_desc-conform_T1w.json").read_text()) == {
        "SkullStripped": False}  # fmt:skip
    assert json.loads((anat / "sub-01_ses-a_qc.json").read_text()) == {"flags": ["oblique"]}


def test_writer_refuses_a_planned_derivative_without_input(tmp_path):
    plan = [{"field": "t1w", "index": None, "meta": None,
             "entities": {"subject": "01", "suffix": "T1w", "extension": ".nii.gz"}}]  # fmt:skip
    with pytest.raises(ValueError, match="'t1w' has no input"):
        _writer(tmp_path, plan, fields=["t1w"]).run()
    assert not (tmp_path / "out").exists()


def test_atomic_path_leaves_nothing_on_interrupt(tmp_path):
    target = tmp_path / "sub-01_T1w.nii.gz"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    write_json_atomic(target.with_suffix(".json"), {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["sub-01_T1w.nii.json"]


def test_derivatives_root(tmp_path, monkeypatch):
    monkeypatch.delenv("BIDS_BRAINAGE_CONTAINER", raising=False)
    out = tmp_path / "out"
    (out).mkdir()
    (out / ".bidsignore").write_text("mine\n")
    write_derivatives_root(out, tmp_path / "bids")
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "bids_brainage"
    assert "Container" not in description["GeneratedBy"][0]
    ignore = (out / ".bidsignore").read_text().splitlines()
    assert ignore[0] == "mine" and set(io_spec()["bidsignore"]) <= set(ignore)
    monkeypatch.setenv("BIDS_BRAINAGE_CONTAINER", "singularity")
    assert dataset_description(tmp_path)["GeneratedBy"][0]["Container"]["Type"] == "singularity"
