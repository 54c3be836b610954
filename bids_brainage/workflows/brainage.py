"""Global brain age of one scan from its features, with every selected bundle."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..interfaces.brainage import (
    OcclusionImportance,
    PredictBrainAge,
    PredictLocalBrainAge,
    UNoiseImportance,
)
from ..models.kinds import BundlePlan

OCCLUSION_MM = 32.0  # cube edge: about 150 cubes cover a brain, a few seconds per scan


def init_brainage_prediction_wf(
    *,
    plan: BundlePlan,
    template: dict,
    age: float | None,
    atlas: dict | None = None,
    threads: int = 1,
    name: str = "brainage_prediction_wf",
):
    """Predict brain age with each bundle of the plan (a dict with ``path``, ``name``, ``kind``
    and its cross-validated ``mae``), and draw the maps the plan names.

    Inputs
    ------
    histogram, modulated, v2_tpl
        the scan's features
    qc
        the scan's assembled QC (its flags travel into the predictions' flags)

    Outputs
    -------
    brainage
        TSV, one row per bundle
    local_map, pad_map, roi_table
        with a local-unet bundle: local brain age, local brain-PAD (when the age is known) and
        whole-brain / Harvard-Oxford ROI means
    """
    workflow = pe.Workflow(name=name)
    described = "; ".join(
        f"{b['name']} ({b['kind']}, cross-validated MAE {b['mae']:.2f} years on {b['data']})"
        for b in plan.age
    )
    workflow.__desc__ = (
        f"Brain age was predicted with {described}. Each prediction carries a 90% "
        "split-conformal interval from the model's out-of-fold errors; brain-PAD is the "
        "predicted minus the chronological age, before any bias correction."
    )
    inputnode = pe.Node(niu.IdentityInterface(fields=["histogram", "modulated", "v2_tpl", "qc"]),
                        name="inputnode")  # fmt:skip
    outputs = ["brainage", "local_map", "pad_map", "roi_table", "occlusion_map", "unoise_map"]
    outputnode = pe.Node(niu.IdentityInterface(fields=outputs), name="outputnode")
    predict = pe.Node(
        PredictBrainAge(bundles=[b["path"] for b in plan.age], template=template,
                        age=age,
                        threads=threads),
        name="predict",
    )  # fmt:skip
    workflow.connect([
        (inputnode, predict, [("histogram", "histogram"), ("modulated", "modulated"),
                              ("v2_tpl", "v2_tpl"), ("qc", "qc")]),
        (predict, outputnode, [("out_table", "brainage")]),
    ])  # fmt:skip
    occluded = plan.occlusion
    if occluded is not None:
        workflow.__desc__ += (
            f" An occlusion map of {occluded['name']} (Cole et al.'s occlusion analysis, as in "
            "seed 000) records the change of the predicted age when each 32 mm cube of the "
            "input is set to zero, averaged over the cubes covering a voxel."
        )
        occlusion = pe.Node(OcclusionImportance(
            bundle=occluded["path"], template=template, threads=threads,
            patch=max(4, round(OCCLUSION_MM / float(template["resolution"])))),
            name="occlusion")  # fmt:skip
        workflow.connect([
            (inputnode, occlusion, [("modulated", "modulated"), ("v2_tpl", "v2_tpl")]),
            (occlusion, outputnode, [("out_map", "occlusion_map")]),
        ])  # fmt:skip
    noise = plan.unoise
    if noise is not None:
        workflow.__desc__ += (
            f" A U-noise importance map (Bintsi et al., seed 003) was drawn with {noise['name']}: "
            f"a 3-D U-Net trained with {noise['explains']} frozen to add as much noise as "
            "possible without harming its prediction; importance is 1 minus the tolerated noise."
        )
        unoise = pe.Node(UNoiseImportance(bundle=noise["path"], template=template,
                                          threads=threads), name="unoise")  # fmt:skip
        workflow.connect([
            (inputnode, unoise, [("modulated", "modulated"), ("v2_tpl", "v2_tpl")]),
            (unoise, outputnode, [("out_map", "unoise_map")]),
        ])  # fmt:skip
    local = plan.local
    if local is not None:
        workflow.__desc__ += (
            f" Local (voxel-wise) brain age was predicted with {local['name']}, a U-Net after "
            "Popescu et al. (2021) applied to the GM and WM maps in overlapping blocks, and "
            f"averaged over the regions of the {atlas['source']}."
        )
        predict_local = pe.Node(
            PredictLocalBrainAge(bundle=local["path"], template=template, age=age,
                                 atlas=atlas["labels"], atlas_names=atlas["names"],
                                 threads=threads),
            name="predict_local",
        )  # fmt:skip
        workflow.connect([
            (inputnode, predict_local, [("modulated", "modulated")]),
            (predict_local, outputnode, [("local_map", "local_map"), ("pad_map", "pad_map"),
                                         ("roi_table", "roi_table")]),
        ])  # fmt:skip
    return workflow
