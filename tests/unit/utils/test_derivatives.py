"""The derivatives writer: names from one spec, sidecars, atomic writes, staged commits."""

import json

import pytest

from bids_brainage.interfaces.bids import CommitDerivatives, DerivativesDataSink
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


def test_sink_writes_file_and_sidecar(tmp_path):
    source = tmp_path / "x.nii.gz"
    source.write_bytes(b"data")
    result = DerivativesDataSink(
        base_directory=str(tmp_path / "out"), entities={"subject": "01", "session": "a"},
        desc="conform", suffix="T1w", extension=".nii.gz", in_file=str(source),
        meta_dict={"SkullStripped": False},
    ).run()  # fmt:skip
    out = tmp_path / "out/sub-01/ses-a/anat/sub-01_ses-a_desc-conform_T1w.nii.gz"
    assert result.outputs.out_file == str(out) and out.read_bytes() == b"data"
    assert json.loads(out.with_name(out.name.replace(".nii.gz", ".json")).read_text()) == {
        "SkullStripped": False
    }


def test_sink_writes_dict_as_json_and_needs_exactly_one_input(tmp_path):
    sink = DerivativesDataSink(
        base_directory=str(tmp_path), entities={"subject": "01"}, suffix="qc", extension=".json",
        in_dict={"flags": ["oblique"]},
    )  # fmt:skip
    out = sink.run().outputs.out_file
    assert json.loads(open(out).read()) == {"flags": ["oblique"]}
    empty = DerivativesDataSink(
        base_directory=str(tmp_path), entities={"subject": "01"}, suffix="qc", extension=".json"
    )
    with pytest.raises(ValueError, match="exactly one"):
        empty.run()


def test_atomic_path_leaves_nothing_on_interrupt(tmp_path):
    target = tmp_path / "sub-01_T1w.nii.gz"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    write_json_atomic(target.with_suffix(".json"), {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["sub-01_T1w.nii.json"]


def test_commit_copies_staged_tree(tmp_path):
    staging = tmp_path / "staging"
    staged = staging / "sub-01/anat/sub-01_qc.json"
    staged.parent.mkdir(parents=True)
    staged.write_text("{}")
    result = CommitDerivatives(
        in_files=[str(staged), str(staged)],
        staging_dir=str(staging),
        output_dir=str(tmp_path / "out"),
    ).run()
    assert result.outputs.out_files == [str(tmp_path / "out/sub-01/anat/sub-01_qc.json")]
    assert staged.exists()  # kept, so cached sink results stay valid


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
