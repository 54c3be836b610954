"""The group level end to end on synthetic predictions with a known +6-year patient effect."""

from __future__ import annotations

import html
import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_brainage.cli.run import main
from bids_brainage.synthetic.predictions import make_prediction_derivatives, map_geometry


def _run(data, tmp_path, *extra):
    return main([str(data["bids"]), str(data["derivatives"]), "group", "-w",
                 str(tmp_path / "work"), "--nprocs", "1", *extra])  # fmt:skip


def _stats(data, desc):
    return pd.read_csv(data["derivatives"] / "group" / f"group_desc-{desc}_stats.tsv", sep="\t",
                       na_values="n/a")  # fmt:skip


@pytest.fixture(scope="module")
def effect_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("effect")
    data = make_prediction_derivatives(root, 200, 80, effect=6.0, dilution=0.7, n_rescans=24,
                                       local_maps=True, seed=3)  # fmt:skip
    before = sorted(p.relative_to(data["bids"]) for p in data["bids"].rglob("*"))
    code = _run(data, root)
    return data, code, before


def test_recovers_patient_effect_after_bias_correction(effect_run):
    data, code, before = effect_run
    assert code == 0
    groups = _stats(data, "groups").set_index("measure")
    corrected = groups.loc["brain_pad_corrected"]
    assert (corrected.group1, corrected.group2) == ("PT", "HC")
    assert corrected.difference_ci_low <= data["truth"]["effect"] <= corrected.difference_ci_high
    assert corrected.p < 1e-6 and corrected.cohens_d > 1
    # without correction the dilution hides most of the effect (older patients look younger)
    assert groups.loc["brain_pad"].difference < corrected.difference - 2
    bias = _stats(data, "bias").iloc[0]
    assert abs(bias.pad_age_r_controls_before) > 0.5
    assert abs(bias.pad_age_r_controls_after) < 0.1
    assert bias.alpha == pytest.approx(-(1 - data["truth"]["dilution"]), abs=0.05)
    roc = _stats(data, "roc").iloc[0]
    assert roc.auc > 0.75 and roc.auc_ci_low > 0.5
    assert sorted(p.relative_to(data["bids"]) for p in data["bids"].rglob("*")) == before


def test_rescans_give_icc_near_truth(effect_run):
    data, _, _ = effect_run
    row = _stats(data, "reliability").iloc[0]
    assert row.n_targets == 24
    assert row.icc_ci_low <= data["truth"]["icc"] <= row.icc_ci_high
    assert row.icc == pytest.approx(data["truth"]["icc"], abs=0.03)
    assert row.loa_low < 0 < row.loa_high


def test_roi_and_voxelwise_find_the_planted_region(effect_run):
    data, _, _ = effect_run
    roi = _stats(data, "roi").set_index("roi")
    assert roi.loc["Left region", "p_bonferroni"] < 1e-6
    assert roi.loc["Left region", "difference"] == pytest.approx(6.0, abs=1.5)
    assert roi.loc["Right region", "p_bonferroni"] > 1e-3
    group = data["derivatives"] / "group"
    _, mask, labels = map_geometry()
    t = nib.load(next(group.glob("*desc-PTvsHCt_statmap.nii.gz"))).get_fdata()
    assert t[labels == 1].mean() > 5 and abs(t[labels == 3].mean()) < 2.5
    icc = nib.load(next(group.glob("*desc-icc_statmap.nii.gz"))).get_fdata()
    assert np.median(icc[mask]) > 0.8
    bias = nib.load(next(group.glob("*desc-agebias_statmap.nii.gz")))
    sidecar = json.loads(next(group.glob("*desc-agebias_statmap.json")).read_text())
    assert bias.shape[3] == len(sidecar["AgeBins"]) and sidecar["AgeBins"][0] == "18-25"
    for image in group.glob("*.nii.gz"):
        assert image.with_name(image.name.replace(".nii.gz", ".json")).is_file()


def test_population_importance_finds_the_planted_region(effect_run):
    data, _, _ = effect_run
    group = data["derivatives"] / "group"
    _, mask, labels = map_geometry()
    top = nib.load(next(group.glob("*desc-importancetop10_statmap.nii.gz"))).get_fdata() > 0
    assert top.sum() == pytest.approx(0.1 * mask.sum(), rel=0.2)
    assert (labels[top] == 2).mean() > 0.6  # mostly inside the region the model relies on
    sidecar = json.loads(next(group.glob("*desc-importanceover60_statmap.json")).read_text())
    assert "over 60" in sidecar["Description"] and sidecar["NumberOfMaps"] == 280
    under30 = nib.load(next(group.glob("*desc-importanceunder30_statmap.nii.gz"))).get_fdata()
    # recomputed from the per-scan occlusion maps: |importance| averaged over the first scans
    # of participants under 30
    participants = pd.read_csv(data["bids"] / "participants.tsv", sep="\t")
    young = set(participants.loc[participants["age"] < 30, "participant_id"])
    first = {}
    for file in sorted(data["derivatives"].glob("sub-*/**/anat/*desc-occlusion_brainage.nii.gz")):
        first.setdefault(file.name.split("_")[0], file)  # sorted: the first session first
    maps = [np.abs(nib.load(f).get_fdata()) for sub, f in first.items() if sub in young]
    assert maps
    np.testing.assert_allclose(under30, np.mean(maps, axis=0), rtol=1e-5, atol=1e-6)


def test_report_has_every_figure(effect_run):
    data, _, _ = effect_run
    page = (data["derivatives"] / "group.html").read_text()
    for figure in ("synthetic_scatter.png", "synthetic_pad.png", "synthetic_roc.png",
                   "synthetic_reliability.png", "map_PTvsHCt.png", "map_icc.png",
                   "map_importancetop10.png"):  # fmt:skip
        assert figure in page
        assert (data["derivatives"] / "group" / "figures" / figure).is_file()
    assert "Welch's t-test" in html.unescape(page) and "ICC(2,1)" in page


def test_reference_choices(tmp_path):
    data = make_prediction_derivatives(tmp_path, 40, 20, n_rescans=0, seed=4)
    assert _run(data, tmp_path, "--bias-reference-query", "age >= 50") == 0
    bias = _stats(data, "bias").iloc[0]
    truth = data["participants"]
    assert bias.n_reference == ((truth.group == "HC") & (truth.age >= 50)).sum()
    assert "age >= 50" in bias.reference
    external = tmp_path / "external.tsv"
    pd.DataFrame({"age": [20, 40, 60, 80], "predicted_age": [30, 44, 56, 70]}).to_csv(
        external, sep="\t", index=False)  # fmt:skip
    assert _run(data, tmp_path, "--bias-reference", str(external)) == 0
    bias = _stats(data, "bias").iloc[0]
    assert bias.n_reference == 4 and bias.alpha == pytest.approx(-680 / 2000)  # by hand
    assert _run(data, tmp_path, "--bias-reference", "all") == 0
    assert _stats(data, "bias").iloc[0].n_reference == 60


def test_bad_query_is_a_usage_error(tmp_path, capsys):
    data = make_prediction_derivatives(tmp_path, 12, 4, n_rescans=0, seed=5)
    assert _run(data, tmp_path, "--bias-reference-query", "no_such_column > 3") == 64
    err = [line for line in capsys.readouterr().err.splitlines() if "[INFO]" not in line]
    assert len(err) == 1 and "--bias-reference-query" in err[0]
    assert not (data["derivatives"] / "group").exists()


def test_bad_scans_are_excluded_with_their_reason(tmp_path):
    data = make_prediction_derivatives(tmp_path, 30, 10, n_rescans=0, local_maps=True, seed=6)
    out = data["derivatives"]
    qc = out / "sub-p000" / "anat" / "sub-p000_qc.json"
    content = json.loads(qc.read_text())
    qc.write_text(json.dumps({**content, "flags": ["registration_failed"]}))
    (out / "sub-p001" / "anat" / "sub-p001_brainage.tsv").write_text("garbage\n")
    (out / "sub-p002" / "anat" / "sub-p002_brainage.tsv").unlink()
    local = next((out / "sub-p003" / "anat").glob("*_desc-local_brainage.nii.gz"))
    local.write_bytes(b"corrupt")
    assert _run(data, tmp_path) == 0
    scans = pd.read_csv(out / "group" / "group_scans.tsv", sep="\t", na_values="n/a")
    reasons = scans.set_index("participant_id")["excluded"]
    assert reasons["sub-p000"] == "QC: registration_failed"
    assert reasons["sub-p001"] == "unreadable brain-age table"
    assert reasons["sub-p002"].startswith("no brain-age prediction")
    assert reasons.drop(["sub-p000", "sub-p001", "sub-p002"]).isna().all()
    page = (out / "group.html").read_text()
    assert str(local) in page and "cannot be read as NIfTI" in page
    assert _stats(data, "groups").iloc[0].n1 + _stats(data, "groups").iloc[0].n2 == 37
    assert _run(data, tmp_path, "--include-failed-qc") == 0
    scans = pd.read_csv(out / "group" / "group_scans.tsv", sep="\t", na_values="n/a")
    assert pd.isna(scans.set_index("participant_id").at["sub-p000", "excluded"])


def test_no_predictions_still_writes_the_table(tmp_path):
    data = make_prediction_derivatives(tmp_path, 5, 0, n_rescans=0, seed=7)
    for table in data["derivatives"].rglob("*_brainage.tsv"):
        table.unlink()
    assert _run(data, tmp_path) == 0
    assert (data["derivatives"] / "group" / "group_scans.tsv").is_file()
    assert "no brain-age prediction" in (data["derivatives"] / "group.html").read_text()
    shutil.rmtree(tmp_path / "work")
