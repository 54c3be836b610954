"""The participant-level graph: one sub-workflow per participant, one branch per T1w scan."""

from __future__ import annotations

import re
from itertools import groupby

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..config import NEW_PREPROCESSING, Config, bias_correction_with
from ..interfaces.qc import AssembleQC
from ..utils.bids import T1wScan
from .anatomical import init_anat_preproc_wf
from .brainage import init_brainage_prediction_wf
from .outputs import init_anat_derivatives_wf


def _node_safe(text: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]", "_", text)


def scan_workflow_name(scan: T1wScan) -> str:
    """``sub-01_ses-1_run-2`` gives ``t1w_ses_1_run_2_wf`` (unique within its participant)."""
    tag = scan.key.split("_", 1)[1] if "_" in scan.key else ""
    return _node_safe(f"t1w_{tag}_wf" if tag else "t1w_wf")


def subject_workflow_name(subject: str) -> str:
    return _node_safe(f"sub_{subject}_wf")


def init_brainage_wf(config: Config, scans: list[T1wScan]) -> pe.Workflow:
    """The whole participant level: every selected participant's sub-workflow."""
    workflow = pe.Workflow(name="bids_brainage_wf")
    workflow.base_dir = str(config.execution.work_dir)
    ordered = sorted(scans, key=lambda s: s.subject)
    for subject, subject_scans in groupby(ordered, key=lambda s: s.subject):
        single_subject_wf = init_single_subject_wf(
            config=config, scans=list(subject_scans), name=subject_workflow_name(subject)
        )
        workflow.add_nodes([single_subject_wf])
    return workflow


def init_single_subject_wf(*, config: Config, scans: list[T1wScan], name: str) -> pe.Workflow:
    """One participant: each T1w scan is processed independently (one failing spares the rest)."""
    workflow = pe.Workflow(name=name)
    for scan in scans:
        workflow.add_nodes([init_scan_wf(config=config, scan=scan, name=scan_workflow_name(scan))])
    return workflow


def _resolved(settings, key: str) -> str:
    """A preprocessing choice; "auto" (resolved from the bundles by the CLI, left by a config
    built otherwise) gives what new bundles are trained on.
    """
    value = getattr(settings, key)
    resolved = NEW_PREPROCESSING[key] if value == "auto" else value
    if key == "bias_correction":
        contrast = _resolved(settings, "contrast_standardisation")
        return bias_correction_with(contrast, resolved, chosen=value != "auto")
    return resolved


def init_scan_wf(*, config: Config, scan: T1wScan, name: str) -> pe.Workflow:
    """One T1w scan from raw file to committed derivatives.

    Inputs
    ------
    t1w
        the raw T1w image (set from ``scan``)

    Outputs
    -------
    out_files
        the derivatives written into OUTPUT_DIR
    """
    execution, settings = config.execution, config.workflow
    template = settings.template
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
    inputnode.inputs.t1w = str(scan.path)
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_files"]), name="outputnode")

    anat_preproc_wf = init_anat_preproc_wf(
        template=template,
        registration=settings.registration,
        seed=config.seeds.ants,
        limits=settings.conform_limits(),
        brain_extraction=settings.brain_extraction,
        field_of_view=_resolved(settings, "field_of_view"),
        intensity_scale=_resolved(settings, "intensity_scale"),
        stripped_n4_grid=_resolved(settings, "stripped_n4_grid"),
        denoising=_resolved(settings, "denoising"),
        contrast_standardisation=_resolved(settings, "contrast_standardisation"),
        bias_correction=_resolved(settings, "bias_correction"),
        threads=config.nipype.omp_nthreads,
    )
    relative = scan.path.relative_to(execution.bids_dir).as_posix()
    scan_info = {
        k: v
        for k, v in scan.to_dict().items()
        if k in ("subject", "session", "run", "acquisition")
    }
    scan_info.update(source=relative, site=scan.site, site_source=scan.site_source)
    assemble_qc = pe.Node(AssembleQC(scan=scan_info, template=template), name="assemble_qc")
    plan = config.models.plan
    with_local = plan.local is not None
    with_occlusion = plan.occlusion is not None
    with_unoise = plan.unoise is not None
    anat_derivatives_wf = init_anat_derivatives_wf(
        entities=scan.entities,
        with_brainage=bool(plan),
        with_local=with_local,
        with_occlusion=with_occlusion,
        with_unoise=with_unoise,
        with_local_pad=scan.age is not None,
        source_file=f"bids:raw:{relative}",
        template=template,
        staging_dir=execution.work_dir / "staging",
        output_dir=execution.output_dir,
    )
    if plan:
        prediction_wf = init_brainage_prediction_wf(
            plan=plan, template=template, age=scan.age, atlas=config.models.atlas,
            threads=config.nipype.omp_nthreads)  # fmt:skip
        workflow.connect([
            (anat_preproc_wf, prediction_wf, [
                ("outputnode.histogram", "inputnode.histogram"),
                ("outputnode.modulated", "inputnode.modulated"),
                ("outputnode.v2_tpl", "inputnode.v2_tpl")]),
            (assemble_qc, prediction_wf, [("qc", "inputnode.qc")]),
            (prediction_wf, anat_derivatives_wf, [("outputnode.brainage", "inputnode.brainage")]),
        ])  # fmt:skip
        importance = [f for f, wanted in (("occlusion_map", with_occlusion),
                                          ("unoise_map", with_unoise)) if wanted]  # fmt:skip
        if importance:
            workflow.connect([(prediction_wf, anat_derivatives_wf,
                               [(f"outputnode.{f}", f"inputnode.{f}") for f in importance])
                              ])  # fmt:skip
        if with_local:
            local_outputs = ["local_map", "roi_table"] + (["pad_map"] if scan.age is not None
                                                          else [])  # fmt:skip
            workflow.connect(
                [
                    (
                        prediction_wf,
                        anat_derivatives_wf,
                        [(f"outputnode.{f}", f"inputnode.{f}") for f in local_outputs],
                    )
                ]
            )
    products = ["t1w_preproc", "brain_mask", "dseg", "probseg", "xfm", "v2", "t1w_tpl", "v2_tpl",
                "modulated", "histogram", "volumes"]  # fmt:skip
    workflow.connect([
        (inputnode, anat_preproc_wf, [("t1w", "inputnode.t1w")]),
        (anat_preproc_wf, assemble_qc, [
            ("outputnode.qc_conform", "conform"), ("outputnode.qc_n4", "n4"),
            ("outputnode.qc_brain", "brain_extraction"),
            ("outputnode.qc_registration", "registration"),
            ("outputnode.qc_segmentation", "segmentation"),
            ("outputnode.qc_measures", "measures"),
            ("outputnode.qc_template_maps", "template_maps")]),
        (anat_preproc_wf, anat_derivatives_wf, [
            (f"outputnode.{field}", f"inputnode.{field}") for field in products]),
        (assemble_qc, anat_derivatives_wf, [("qc", "inputnode.qc")]),
        (anat_derivatives_wf, outputnode, [("outputnode.out_files", "out_files")]),
    ])  # fmt:skip
    return workflow


def methods_text(workflow: pe.Workflow) -> str:
    """The methods paragraphs carried by the sub-workflows, in pipeline order, each once."""
    import networkx as nx

    seen: list[str] = []
    flat = workflow._create_flat_graph()  # what Nipype runs; its order is the pipeline's
    for node in nx.topological_sort(flat):
        parts = node.fullname.split(".")[1:]  # drop the top workflow's own name
        for depth in range(1, len(parts)):
            desc = getattr(workflow.get_node(".".join(parts[:depth])), "__desc__", None)
            if desc and desc not in seen:
                seen.append(desc)
    return "\n\n".join(seen)
