"""Anatomical preprocessing of one T1w image."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..interfaces.conform import Conform


def init_conform_wf(*, limits: dict | None = None, name: str = "conform_wf") -> pe.Workflow:
    """Check the raw T1w is a usable 3-D brain MRI and reorient it to RAS.

    Inputs
    ------
    t1w
        the raw T1w image

    Outputs
    -------
    t1w_conformed
        the image in RAS orientation, float32, intensity scaling applied
    qc
        what was found about the input (dict)
    """
    workflow = pe.Workflow(name=name)
    workflow.__desc__ = (
        "Each T1-weighted image was checked to be a readable three-dimensional volume "
        "with plausible voxel size and field of view, its stored intensity scaling was "
        "applied, and it was reoriented to RAS with NiBabel."
    )
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["t1w_conformed", "qc"]), name="outputnode")
    conform = pe.Node(Conform(limits=limits or {}), name="conform")
    workflow.connect([
        (inputnode, conform, [("t1w", "in_file")]),
        (conform, outputnode, [("out_file", "t1w_conformed"), ("qc", "qc")]),
    ])  # fmt:skip
    return workflow
