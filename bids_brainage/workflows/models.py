"""Global brain age of one scan from its features, with every selected bundle."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..interfaces.models import PredictBrainAge


def init_brainage_prediction_wf(
    *,
    bundles: list[dict],
    template: dict,
    age: float | None,
    threads: int = 1,
    name: str = "brainage_prediction_wf",
):
    """Predict brain age with each bundle (a dict with ``path``, ``name``, ``kind`` and its
    cross-validated ``mae``).

    Inputs
    ------
    histogram, modulated, v2_tpl
        the scan's features

    Outputs
    -------
    brainage
        TSV, one row per bundle
    """
    workflow = pe.Workflow(name=name)
    described = "; ".join(
        f"{b['name']} ({b['kind']}, cross-validated MAE {b['mae']:.2f} years on {b['data']})"
        for b in bundles
    )
    workflow.__desc__ = (
        f"Brain age was predicted with {described}. Each prediction carries a 90% "
        "split-conformal interval from the model's out-of-fold errors; brain-PAD is the "
        "predicted minus the chronological age, before any bias correction."
    )
    inputnode = pe.Node(niu.IdentityInterface(fields=["histogram", "modulated", "v2_tpl"]),
                        name="inputnode")  # fmt:skip
    outputnode = pe.Node(niu.IdentityInterface(fields=["brainage"]), name="outputnode")
    predict = pe.Node(
        PredictBrainAge(bundles=[b["path"] for b in bundles], template=template, age=age,
                        threads=threads),
        name="predict",
    )  # fmt:skip
    workflow.connect([
        (inputnode, predict, [("histogram", "histogram"), ("modulated", "modulated"),
                              ("v2_tpl", "v2_tpl")]),
        (predict, outputnode, [("out_table", "brainage")]),
    ])  # fmt:skip
    return workflow
