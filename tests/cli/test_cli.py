"""The BIDS-App contract through ``main(argv)``: options, exit codes, outputs, bad inputs."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import nibabel as nb
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from bids_brainage import __version__
from bids_brainage.cli.run import main
from bids_brainage.preprocessing.qc import preprocessing_choices
from bids_brainage.utils.bids import run_bids_validator
from tests.conftest import relative_files, tree_digest

GOLDEN = Path(__file__).parents[1] / "data" / "expected_synthetic_outputs.txt"
FULL_PIPELINE_OK = ["sub-good1", "sub-somenans", "sub-oblique", "sub-flipped", "sub-skullstripped"]


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def synthetic_run(synthetic_dataset, tmp_path_factory):
    """participant then group on the synthetic dataset, once for the module."""
    bids_dir, truth = synthetic_dataset
    root = tmp_path_factory.mktemp("synthetic_run")
    before = tree_digest(bids_dir)
    participant = run([bids_dir, root / "out", "participant", "-w", root / "work", "--nprocs", 2])
    group = run([bids_dir, root / "out", "group", "-w", root / "work"])
    return {"bids": bids_dir, "truth": truth, "out": root / "out", "work": root / "work",
            "participant": participant, "group": group, "digest_before": before}  # fmt:skip


def test_help_and_version(capsys):
    assert main(["--help"]) == 0
    help_text = capsys.readouterr().out
    for option in (
        "--participant-label",
        "--session-label",
        "--bids-filter-file",
        "--work-dir",
        "--nprocs",
        "--omp-nthreads",
        "--mem-gb",
        "--skip-bids-validation",
        "--seed",
    ):
        assert option in help_text  # fmt:skip
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"bids_brainage {__version__}"


def test_underscore_spellings_are_accepted(tmp_path, synthetic_dataset):
    bids_dir, _ = synthetic_dataset
    code, _, err = run([bids_dir, tmp_path / "o", "participant", "--participant_label", "sub-99",
                        "--n_cpus", 1, "--skip_bids_validation", "--work_dir", tmp_path / "w"])  # fmt:skip
    assert code == 18, err


def test_unknown_level_is_17(tmp_path):
    code, _, err = run([tmp_path, tmp_path / "out", "session"])
    assert code == 17 and "unknown analysis level 'session'" in err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["{bids}"], "required"),
        (["{bids}", "{out}", "participant", "--nprocs", "0"], "at least 1"),
        (["{bids}", "{out}", "participant", "--bogus"], "unrecognized arguments"),
        (["{tmp}/missing", "{out}", "participant"], "BIDS_DIR is not a folder"),
        (["{bids}", "{bids}", "participant"], "must not be BIDS_DIR"),
        (["{bids}", "{bids}/derivatives/x", "participant"], "must not be inside BIDS_DIR"),
        (["{bids}", "{out}", "participant", "-w", "{bids}/work"], "must not be inside BIDS_DIR"),
        (["{bids}", "{out}", "participant", "-w", "{out}/work"], "must not be inside OUTPUT_DIR"),
        (["{bids}", "{out}", "participant", "--bids-filter-file", "{tmp}/f.json"], "filter file"),
    ],
)
def test_usage_errors_are_64_and_write_nothing(tmp_path, argv, fragment):
    bids = tmp_path / "bids"
    bids.mkdir()
    (tmp_path / "f.json").write_text("{broken")
    values = {"bids": bids, "out": tmp_path / "out", "tmp": tmp_path}
    code, _, err = run([a.format(**values) for a in argv])
    assert code == 64 and fragment in err
    assert not (tmp_path / "out").exists() and list(bids.iterdir()) == []


def test_invalid_bids_is_16_with_problems_listed(tmp_path, bad_kit):
    bids_dir, _ = bad_kit
    code, _, err = run([bids_dir, tmp_path / "out", "participant", "-w", tmp_path / "w"])
    assert code == 16
    assert "is not valid BIDS" in err and "EMPTY_FILE" in err and "--skip-bids-validation" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run([empty, tmp_path / "out2", "participant"])[0] == 16  # no dataset_description


def test_filters_matching_nothing_is_18(tmp_path, synthetic_dataset):
    bids_dir, _ = synthetic_dataset
    base = [
        bids_dir,
        tmp_path / "out",
        "participant",
        "-w",
        tmp_path / "w",
        "--skip-bids-validation",
    ]
    assert run([*base, "--participant-label", "99"])[0] == 18
    assert run([*base, "--session-label", "7"])[0] == 18
    (tmp_path / "f.json").write_text(json.dumps({"t1w": {"acquisition": "none"}}))
    code, _, err = run([*base, "--bids-filter-file", tmp_path / "f.json"])
    assert code == 18 and "no T1w image" in err


def test_group_without_participant_outputs_is_18(tmp_path, synthetic_dataset):
    bids_dir, _ = synthetic_dataset
    code, _, err = run([bids_dir, tmp_path / "out", "group", "-w", tmp_path / "w"])
    assert code == 18 and "run the participant level first" in err


def test_participant_level_outputs_match_golden_list(synthetic_run):
    code, _, err = synthetic_run["participant"]
    assert code == 0, err
    out = synthetic_run["out"]
    produced = [f for f in relative_files(out) if not f.startswith("logs/")]
    assert produced == GOLDEN.read_text().split()
    logs = relative_files(out / "logs")
    assert "CITATION.md" in logs and any(f.startswith("config-") for f in logs)
    assert not any("crash" in f for f in logs)


def test_outputs_are_valid_bids_derivatives(synthetic_run):
    assert run_bids_validator(synthetic_run["out"]) == []


def test_bids_dir_is_untouched_and_nothing_partial(synthetic_run):
    assert tree_digest(synthetic_run["bids"]) == synthetic_run["digest_before"]
    assert not [p for p in synthetic_run["out"].rglob("*") if ".partial" in p.name]


def test_preprocessed_images_and_qc(synthetic_run):
    out = synthetic_run["out"]
    anat = out / "sub-02/ses-1/anat"
    qc = json.loads((anat / "sub-02_ses-1_qc.json").read_text())
    assert qc["scan"]["site"] == "siteB" and qc["scan"]["site_source"] == "participants.tsv"
    assert qc["conform"]["input_orientation"] == "LPS"
    assert qc["conform"]["voxel_size_mm"] == [2.4, 2.4, 2.4]
    assert qc["flags"] == ["low_resolution"]
    assert qc["template"]["name"] == "MNI152NLin2009cSym"  # no TemplateFlow files here
    img = nb.load(anat / "sub-02_ses-1_desc-preproc_T1w.nii.gz")
    assert nb.aff2axcodes(img.affine) == ("R", "A", "S")
    sidecar = json.loads((anat / "sub-02_ses-1_desc-preproc_T1w.json").read_text())
    assert sidecar["Sources"] == ["bids:raw:sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz"]


def test_volumes_recover_the_generator_truth(synthetic_run):
    """Tissue volumes measured by the pipeline against the synthetic ground truth."""
    truth = synthetic_run["truth"]
    for row in truth.itertuples():
        anat = synthetic_run["out"] / row.participant_id / row.session_id / "anat"
        stem = f"{row.participant_id}_{row.session_id}"
        volumes = pd.read_csv(anat / f"{stem}_desc-volumes_features.tsv", sep="\t").iloc[0]
        assert volumes["tiv_ml"] == pytest.approx(row.tiv_ml, rel=0.08), stem
        assert volumes["gm_ml"] == pytest.approx(row.gm_ml, rel=0.12), stem
    measured = {}
    for row in truth[truth.session_id == "ses-1"].itertuples():
        anat = synthetic_run["out"] / row.participant_id / "ses-1" / "anat"
        table = pd.read_csv(
            anat / f"{row.participant_id}_ses-1_desc-volumes_features.tsv", sep="\t"
        )
        measured[row.participant_id] = table["csf_fraction"].iloc[0]
    by_age = truth[truth.session_id == "ses-1"].sort_values("effective_age")["participant_id"]
    fractions = [measured[p] for p in by_age]
    assert fractions[0] < fractions[-1]  # the oldest-looking brain has the most CSF


def test_group_table_matches_ground_truth(synthetic_run):
    code, stdout, err = synthetic_run["group"]
    assert code == 0, err
    assert "5 scan(s) of 4 participant(s)" in stdout
    table = pd.read_csv(synthetic_run["out"] / "group/group_scans.tsv", sep="\t")
    truth = synthetic_run["truth"]
    merged = table.merge(truth, on=["participant_id", "session_id"], suffixes=("", "_truth"))
    assert len(merged) == len(truth) == 5
    assert (merged["age"] == merged["age_truth"]).all()
    assert (merged["site"] == merged["site_truth"]).all()
    assert (merged["group"] == merged["group_truth"]).all()
    sidecar = json.loads((synthetic_run["out"] / "group/group_scans.json").read_text())
    assert set(sidecar) == set(table.columns)
    # statistics of the packaged model: bias fitted on its own out-of-fold set (only 3
    # controls here), PT vs HC compared, the report shows the figures
    model = (
        table.filter(like="_brain_pad_corrected").columns[0].removesuffix("_brain_pad_corrected")
    )
    bias = pd.read_csv(synthetic_run["out"] / "group/group_desc-bias_stats.tsv", sep="\t")
    assert bias.loc[0, "reference"].startswith(f"out-of-fold predictions of the bundle {model}")
    groups = pd.read_csv(synthetic_run["out"] / "group/group_desc-groups_stats.tsv", sep="\t")
    assert set(zip(groups.group1, groups.group2, strict=False)) == {("PT", "HC")}
    # the Welch test of the corrected brain-PAD is scipy's on the per-scan values written
    # (one patient here: the difference is defined, t is not)
    row = groups[(groups["measure"] == "brain_pad_corrected")].iloc[0]
    once = table.drop_duplicates("participant_id")
    values = once.set_index("group")[f"{model}_brain_pad_corrected"]
    expected = scipy_stats.ttest_ind(values.loc[["PT"]], values.loc[["HC"]], equal_var=False)
    assert row["t"] == pytest.approx(expected.statistic, rel=1e-2, nan_ok=True)  # TSVs rounded
    difference = values.loc[["PT"]].mean() - values.loc[["HC"]].mean()
    assert row["difference"] == pytest.approx(difference, abs=0.02)
    page = (synthetic_run["out"] / "group.html").read_text()
    for figure in ("scatter", "pad", "roc"):
        assert f"{model.replace('-', '_')}_{figure}.png" in page


def test_rerun_restores_deleted_outputs_from_cache(synthetic_run, tmp_path):
    out = synthetic_run["out"]
    target = out / "sub-01/ses-2/anat/sub-01_ses-2_qc.json"
    target.unlink()
    code, _, err = run([synthetic_run["bids"], out, "participant", "-w", synthetic_run["work"],
                        "--participant-label", "01", "--nprocs", 1, "--skip-bids-validation"])  # fmt:skip
    assert code == 0, err
    assert target.exists()


def test_rerun_after_new_timestamps_reuses_the_work_folder(synthetic_run, tmp_path):
    """A dataset re-synced without its mtimes (cluster copy, fresh checkout) hits the cache."""
    scan = next(synthetic_run["bids"].glob("sub-01/ses-1/anat/*_T1w.nii.gz"))
    conform = [p for p in synthetic_run["work"].rglob("result_conform.pklz")
               if "sub_01" in str(p)]  # fmt:skip
    stamps = {p: p.stat().st_mtime_ns for p in conform}
    old = scan.stat()
    os.utime(scan, (old.st_atime + 3600, old.st_mtime + 3600))
    try:
        code, _, err = run([synthetic_run["bids"], tmp_path / "out", "participant",
                            "-w", synthetic_run["work"], "--participant-label", "01",
                            "--nprocs", 1, "--skip-bids-validation"])  # fmt:skip
    finally:
        os.utime(scan, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert code == 0, err
    assert stamps and {p: p.stat().st_mtime_ns for p in conform} == stamps


def test_bad_inputs_fail_alone_with_one_line_each(tmp_path, bad_kit):
    bids_dir, expected = bad_kit
    before = tree_digest(bids_dir)
    out = tmp_path / "out"
    # Every failing case, and the passing cases whose handling needs the whole pipeline; the
    # others (one-volume 4-D, missing or n/a age, broken sidecar) pass the same steps as good1
    # and are checked where they are decided (test_conform, test_bids_input).
    expected = expected[
        (expected.expect == "fail") | expected.participant_id.isin(FULL_PIPELINE_OK)
    ]
    labels = list(expected.participant_id)
    code, _, err = run([bids_dir, out, "participant", "-w", tmp_path / "w",
                        "--skip-bids-validation", "--nprocs", 2, "--participant-label", *labels])  # fmt:skip
    assert code == 1
    failures = {line.split(":")[0].strip(): line for line in err.splitlines()
                if line.startswith("  sub-")}  # fmt:skip
    for case in expected.itertuples():
        produced = out / case.participant_id
        if case.expect == "fail":
            assert case.participant_id in failures, case.participant_id
            assert case.message in failures[case.participant_id]
            if "participants.tsv" not in failures[case.participant_id]:
                assert f"{case.participant_id}_T1w.nii.gz" in failures[case.participant_id]
            assert not produced.exists(), f"{case.participant_id} left outputs behind"
            report = (out / f"{case.participant_id}.html").read_text()
            assert "Failed: " in report and "<img" not in report
        else:
            assert case.participant_id not in failures, failures.get(case.participant_id)
            qc = json.loads(next(produced.rglob("*_qc.json")).read_text())
            for flag in filter(None, str(case.flags).split(",")):
                assert flag in qc["flags"], (case.participant_id, qc["flags"])
            if "skull_stripped_input" in str(case.flags):
                # the packaged bundles run N4 again inside the brain: a head and its stripped
                # brain take one path, so the predictions are not flagged (QC still says so)
                assert preprocessing_choices(qc)["bias_correction"] == "brain", qc["n4"]
                table = produced / "anat" / f"{case.participant_id}_brainage.tsv"
                rows = table.read_text().splitlines()
                assert not any("skull_stripped_input" in row for row in rows[1:]), rows
    n_fail = int((expected["expect"] == "fail").sum())
    assert len(failures) == n_fail and f"{n_fail} of {len(expected)} scan(s) failed" in err
    assert len(list((out / "logs").glob("crash-*.txt"))) == n_fail
    assert "Traceback" not in err
    assert tree_digest(bids_dir) == before
    assert run_bids_validator(out) == []  # what was written is still a valid tree
    # the group level (maybe another job) lists each failed scan with its reason
    records = sorted((out / "logs" / "failed").glob("sub-*.json"))
    assert sorted({r.stem.split("_")[0] for r in records}) == sorted(failures)
    code, _, err = run([bids_dir, out, "group", "-w", tmp_path / "w"])
    assert code == 0, err
    listed = [line for line in err.splitlines() if "failed at the participant level" in line]
    assert len(listed) == n_fail and "Traceback" not in err
    assert tree_digest(bids_dir) == before


def test_interrupt_leaves_only_whole_files(tmp_path, synthetic_run):
    """Ctrl-C while derivatives are being committed: every file in OUTPUT_DIR is complete.

    The run reuses the synthetic run's work folder, so its nodes are cached and it reaches the
    commit steps within seconds; the interrupt lands while files are being copied.
    """
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bids_brainage", str(synthetic_run["bids"]), str(out),
           "participant", "-w", str(synthetic_run["work"]), "--nprocs", "1",
           "--skip-bids-validation"]  # fmt:skip
    # A background shell (CI) starts us with SIGINT ignored; the child must see Ctrl-C.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.glob("sub-*/**/*.nii.gz")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert "OUTPUT_DIR holds only complete files" in err.decode()
    assert (out / "dataset_description.json").exists()
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
    for image in out.rglob("*.nii.gz"):
        assert nb.load(image).get_fdata().size > 0
    for sidecar in out.rglob("*.json"):
        json.loads(sidecar.read_text())
    assert os.path.isdir(synthetic_run["bids"])


def test_default_work_dir_is_per_dataset(tmp_path):
    from bids_brainage.cli.parser import default_work_dir

    a = default_work_dir(tmp_path / "a", tmp_path / "out")
    assert a == default_work_dir(tmp_path / "a", tmp_path / "out")
    assert a != default_work_dir(tmp_path / "b", tmp_path / "out")
    assert a != default_work_dir(tmp_path / "a", tmp_path / "out2")


def test_same_input_and_seed_give_identical_files(synthetic_run, tmp_path):
    """A fresh run (new work folder, nothing cached) reproduces every file byte for byte."""
    code, _, err = run([synthetic_run["bids"], tmp_path / "out", "participant", "-w",
                        tmp_path / "work", "--participant-label", "02", "--nprocs", 1,
                        "--skip-bids-validation"])  # fmt:skip
    assert code == 0, err
    first = synthetic_run["out"] / "sub-02"
    again = tmp_path / "out" / "sub-02"
    files = relative_files(first)
    assert files == relative_files(again) and len(files) > 20
    differ = [f for f in files if (first / f).read_bytes() != (again / f).read_bytes()]
    assert differ == []


def test_no_reports_writes_the_derivatives_without_html(synthetic_run, tmp_path):
    out = tmp_path / "out"
    code, _, err = run([synthetic_run["bids"], out, "participant", "-w", synthetic_run["work"],
                        "--participant-label", "01", "--nprocs", 1, "--skip-bids-validation",
                        "--no-reports"])  # fmt:skip
    assert code == 0, err
    assert list(out.rglob("*.html")) == [] and not (out / "sub-01" / "figures").exists()
    assert relative_files(out / "sub-01") == [
        f for f in relative_files(synthetic_run["out"] / "sub-01") if not f.startswith("figures")
    ]


def test_subject_reports_show_every_scan(synthetic_run):
    out = synthetic_run["out"]
    page = (out / "sub-01.html").read_text()
    for session in ("ses-1", "ses-2"):
        assert f'<h2 id="sub-01_{session}">sub-01_{session}</h2>' in page
    images = re.findall(r'<img src="([^"]+)"', page)
    # per scan: histograms, local, local PAD, occlusion, U-noise as images; the mask and
    # segmentation mosaic and the registration flicker as nireports' SVG reportlets
    assert len(images) == 10
    for desc in ("local", "localpad", "occlusion", "unoise"):
        assert sum(f"desc-{desc}_brainage.png" in i for i in images) == 2
    reportlets = re.findall(r'<object type="image/svg\+xml" data="([^"]+)"', page)
    assert sorted(r.rsplit("_desc-", 1)[1] for r in reportlets) == [
        "brainmask_T1w.svg", "brainmask_T1w.svg", "registration_T1w.svg", "registration_T1w.svg"]
    for reportlet in reportlets:  # a mosaic with contours, and the flicker's two layers
        svg = (out / reportlet).read_text()
        assert svg.startswith("<svg") or "<svg" in svg[:500]
        assert "flicker" in svg if "registration" in reportlet else "<path" in svg
    for image in images + reportlets:
        assert (out / image).stat().st_size > 10_000
    assert "QC numbers" in page and "registration_correlation" in page
