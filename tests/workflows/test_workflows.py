"""The participant graph builds on a fake BIDS skeleton (nothing runs)."""

from dataclasses import replace

import pytest
from nipype.interfaces.base import isdefined

from bids_brainage.config import Config, ExecutionSettings, WorkflowSettings
from bids_brainage.models.bundle import load_bundle, resolve_bundle
from bids_brainage.models.kinds import BundlePlan
from bids_brainage.utils.atlas import harvard_oxford
from bids_brainage.utils.bids import collect_t1w
from bids_brainage.utils.templates import resolve_template
from bids_brainage.workflows.anatomical import init_anat_preproc_wf, init_conform_wf
from bids_brainage.workflows.base import init_brainage_wf, methods_text
from tests.helpers.skeleton import make_skeleton


def make_config(tmp_path, bids_dir):
    template = resolve_template(tmp_path / "templates")
    return Config(
        execution=ExecutionSettings(
            bids_dir=bids_dir, output_dir=tmp_path / "out", analysis_level="participant",
            work_dir=tmp_path / "work",
        ),
        workflow=WorkflowSettings(template=template.to_dict()),
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
        assert f"{branch}.anat_preproc_wf.conform_wf.conform" in names
        assert f"{branch}.anat_preproc_wf.registration_wf.registration" in names
        assert f"{branch}.anat_derivatives_wf.write_derivatives" in names
    assert sum(name.endswith(".write_derivatives") for name in names) == 5
    assert "checked to be a readable three-dimensional volume" in methods_text(workflow)


def test_conform_wf_contract():
    workflow = init_conform_wf()
    assert set(workflow.get_node("inputnode").outputs.copyable_trait_names()) == {"t1w"}
    assert set(workflow.get_node("outputnode").outputs.copyable_trait_names()) == {
        "t1w_conformed", "qc",
    }  # fmt:skip
    assert sorted(workflow.list_node_names()) == ["conform", "inputnode", "outputnode"]


def test_anat_preproc_wf_contract(tmp_path):
    template = resolve_template(tmp_path / "templates").to_dict()
    workflow = init_anat_preproc_wf(template=template, registration="precise", seed=1)
    outputs = set(workflow.get_node("outputnode").outputs.copyable_trait_names())
    assert outputs >= {
        "t1w_preproc",
        "brain_mask",
        "dseg",
        "probseg",
        "xfm",
        "t1w_tpl",
        "v2_tpl",
        "modulated",
        "histogram",
        "volumes",
        "qc_registration",
    }
    assert workflow.get_node("registration_wf.registration").inputs.preset == "precise"
    for step in (
        "n4_wf",
        "brain_extraction_wf",
        "registration_wf",
        "segmentation_wf",
        "normalisation_wf",
        "template_maps_wf",
    ):  # each step: inputnode -> outputnode
        names = workflow.get_node(step).list_node_names()
        assert "inputnode" in names and "outputnode" in names and len(names) == 3
    assert methods_text(workflow).count("Atropos") == 1
    assert workflow.get_node("segmentation_wf.segmentation").inputs.intensity == "linear"


def scan_graphs(tmp_path, setting: str, values, node: str):
    """For each value of one workflow setting: that scan's node and the methods text."""
    bids_dir = make_skeleton(tmp_path / "bids", ["sub-01/anat/sub-01_T1w.nii.gz"])
    config = make_config(tmp_path, bids_dir)
    for value in values:
        setattr(config.workflow, setting, value)
        workflow = init_brainage_wf(config, collect_t1w(bids_dir))
        yield workflow.get_node(f"sub_01_wf.t1w_wf.anat_preproc_wf.{node}"), methods_text(workflow)


def test_scan_graph_segments_what_the_settings_say(tmp_path):
    """A config built without the CLI ("auto") segments as new bundles are trained: on the
    intensities (linear)."""
    values = {"auto": "linear", "linear": "linear", "log": "log", "log-registration": "linear"}
    graphs = scan_graphs(tmp_path, "intensity_scale", values, "segmentation_wf.segmentation")
    for (node, methods), expected in zip(graphs, values.values(), strict=True):
        assert node.inputs.intensity == expected
        assert ("logarithm of the intensities" in methods) == (expected == "log")


def test_scan_graph_registers_what_the_settings_say(tmp_path):
    values = {"auto": "linear", "linear": "linear", "log": "log", "log-registration": "log"}
    graphs = scan_graphs(tmp_path, "intensity_scale", values, "registration_wf.registration")
    for (node, methods), expected in zip(graphs, values.values(), strict=True):
        assert node.inputs.intensity == expected
        assert ("logarithm of their intensities" in methods) == (expected == "log")


def test_scan_graph_denoises_only_when_asked(tmp_path):
    """Denoising before N4 is set on the N4 node only when chosen ("auto" without a bundle:
    none, as new bundles are trained): a graph without it hashes as before, so older work
    folders stay valid."""
    values = {"auto": None, "none": None, "rician": "rician"}
    graphs = scan_graphs(tmp_path, "denoising", values, "n4_wf.n4")
    for (node, methods), expected in zip(graphs, values.values(), strict=True):
        denoising = node.inputs.denoising
        assert (denoising if isdefined(denoising) else None) == expected
        assert ("non-local means" in methods) == (expected == "rician")


def test_contrast_standardisation_feeds_every_step_after_brain_extraction(tmp_path):
    """With "power" a second N4 of the powered image feeds registration, segmentation, the
    measures, the template maps and the outputs, and its QC is the scan's N4 QC; brain
    extraction still reads the first N4 image. Without it ("auto" without a bundle: none) the
    graph is what it was.
    """
    template = resolve_template(tmp_path / "templates").to_dict()
    for choice in ("none", "power"):
        workflow = init_anat_preproc_wf(template=template, seed=1, denoising="rician",
                                        contrast_standardisation=choice)  # fmt:skip
        graph = workflow._graph
        sources = {(dst.name, src.name) for src, dst in graph.edges()}
        readers = {"registration_wf", "segmentation_wf", "normalisation_wf", "template_maps_wf",
                   "outputnode"}  # fmt:skip
        expected = "contrast_wf" if choice == "power" else "n4_wf"
        for reader in readers:
            assert (reader, expected) in sources, (choice, reader)
        assert ("brain_extraction_wf", "n4_wf") in sources
        if choice == "power":
            node = workflow.get_node("contrast_wf.contrast")
            assert node.inputs.denoising == "rician"
            assert {
                ("contrast_wf", "conform_wf"),
                ("contrast_wf", "brain_extraction_wf"),
            } <= sources
            assert "grey/white-matter intensity ratio" in methods_text(workflow)
        else:
            assert workflow.get_node("contrast_wf") is None
            assert "grey/white-matter intensity ratio" not in methods_text(workflow)
    with pytest.raises(ValueError, match="contrast_standardisation must be"):
        init_anat_preproc_wf(template=template, seed=1, contrast_standardisation="histogram")
    values = {"auto": None, "none": None, "power": "power"}
    graphs = scan_graphs(tmp_path, "contrast_standardisation", values, "contrast_wf.contrast")
    for (node, _), expected in zip(graphs, values.values(), strict=True):
        assert (node is not None) == (expected is not None)



def test_bias_correction_in_the_brain_feeds_every_step_after_brain_extraction(tmp_path):
    """With "brain" N4 runs again on the conformed image inside the brain mask and feeds
    registration, segmentation, the measures, the template maps and the outputs; brain
    extraction still reads the first N4 image. It does not combine with the contrast step.
    """
    template = resolve_template(tmp_path / "templates").to_dict()
    workflow = init_anat_preproc_wf(template=template, seed=1, bias_correction="brain")
    sources = {(dst.name, src.name) for src, dst in workflow._graph.edges()}
    for reader in ("registration_wf", "segmentation_wf", "normalisation_wf", "template_maps_wf",
                   "outputnode"):  # fmt:skip
        assert (reader, "brain_n4_wf") in sources, reader
        assert (reader, "n4_wf") not in sources or reader == "outputnode", reader
    assert {("brain_extraction_wf", "n4_wf"), ("brain_n4_wf", "conform_wf"),
            ("brain_n4_wf", "brain_extraction_wf")} <= sources  # fmt:skip
    assert "inside the brain mask" in methods_text(workflow)
    with pytest.raises(ValueError, match="bias_correction must be"):
        init_anat_preproc_wf(template=template, seed=1, bias_correction="skull")
    with pytest.raises(ValueError, match="cannot be combined"):
        init_anat_preproc_wf(template=template, seed=1, bias_correction="brain",
                             contrast_standardisation="power")  # fmt:skip
    values = {"auto": "brain", "head": None, "brain": "brain"}  # auto: as new bundles
    graphs = scan_graphs(tmp_path, "bias_correction", values, "brain_n4_wf.brain_n4")
    for (node, _), expected in zip(graphs, values.values(), strict=True):
        assert (node is not None) == (expected is not None)


PLANS = {
    "age only": ["default"],
    "age and local maps": ["default", "default-local"],
    "age and U-noise": ["default", "default-unoise"],
    "every map": ["default", "default-local", "default-unoise"],
}


@pytest.mark.parametrize("with_age", [True, False], ids=["age", "no age"])
@pytest.mark.parametrize("plan_name", list(PLANS))
def test_every_branch_of_the_plan_wires_and_expands(tmp_path, plan_name, with_age):
    """Each combination of bundle roles builds a graph whose every connection names real
    fields: Nipype's expansion, as the scheduler does it, runs without error."""
    from nipype.pipeline.engine.utils import generate_expanded_graph

    bundles = [load_bundle(resolve_bundle(name)) for name in PLANS[plan_name]]
    bids_dir = make_skeleton(tmp_path / "bids", ["sub-01/anat/sub-01_T1w.nii.gz"])
    config = make_config(tmp_path, bids_dir)
    config.models.plan = BundlePlan.of([b.describe() for b in bundles])
    if config.models.plan.local is not None:
        template = resolve_template(tmp_path / "templates")
        labels, names = harvard_oxford(template, tmp_path / "templates")
        config.models.atlas = {"labels": str(labels), "names": names, "source": "test"}
    scans = [replace(s, age=50.0 if with_age else None) for s in collect_t1w(bids_dir)]
    workflow = init_brainage_wf(config, scans)
    expanded = generate_expanded_graph(workflow._create_flat_graph())
    names = {node.fullname for node in expanded.nodes()}
    wanted = {"occlusion": True, "predict_local": "local" in plan_name or "every" in plan_name,
              "unoise": "U-noise" in plan_name or "every" in plan_name}  # fmt:skip
    for node, present in wanted.items():
        assert any(n.endswith(f".{node}") for n in names) == present, node
    # the local brain-PAD map needs an age; a missing input or connection would fail above
    (writer,) = [n for n in expanded.nodes() if n.fullname.endswith(".write_derivatives")]
    planned = {item["field"] for item in writer.inputs.plan}
    assert ("pad_map" in planned) == (with_age and wanted["predict_local"])
    assert ("unoise_map" in planned) == wanted["unoise"]
