"""The participant graph builds on a fake BIDS skeleton (nothing runs)."""

from bids_brainage.config import Config, ExecutionSettings
from bids_brainage.testing.skeleton import make_skeleton
from bids_brainage.utils.bids import collect_t1w
from bids_brainage.workflows.anatomical import init_conform_wf
from bids_brainage.workflows.base import init_brainage_wf, methods_text


def make_config(tmp_path, bids_dir):
    return Config(
        execution=ExecutionSettings(
            bids_dir=bids_dir, output_dir=tmp_path / "out", analysis_level="participant",
            work_dir=tmp_path / "work",
        )
    )  # fmt:skip


def test_graph_has_one_branch_per_scan(tmp_path):
    bids_dir = make_skeleton(
        tmp_path / "bids",
        ["sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz", "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz",
         "sub-02/anat/sub-02_run-1_T1w.nii.gz", "sub-02/anat/sub-02_run-2_T1w.nii.gz",
         "sub-a1b/anat/sub-a1b_T1w.nii.gz"],
    )  # fmt:skip
    workflow = init_brainage_wf(make_config(tmp_path, bids_dir), collect_t1w(bids_dir))
    names = workflow.list_node_names()
    for branch in ("sub_01_wf.t1w_ses_1_wf", "sub_01_wf.t1w_ses_2_wf", "sub_02_wf.t1w_run_1_wf",
                   "sub_02_wf.t1w_run_2_wf", "sub_a1b_wf.t1w_wf"):  # fmt:skip
        assert f"{branch}.conform_wf.conform" in names
        assert f"{branch}.anat_derivatives_wf.commit" in names
    assert sum(name.endswith(".commit") for name in names) == 5
    assert "checked to be a readable three-dimensional volume" in methods_text(workflow)


def test_conform_wf_contract():
    workflow = init_conform_wf()
    assert set(workflow.get_node("inputnode").outputs.copyable_trait_names()) == {"t1w"}
    assert set(workflow.get_node("outputnode").outputs.copyable_trait_names()) == {
        "t1w_conformed", "qc",
    }  # fmt:skip
    assert sorted(workflow.list_node_names()) == ["conform", "inputnode", "outputnode"]
