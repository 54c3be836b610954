"""Every derivative of a scan is written here, through DerivativesDataSink nodes only."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..interfaces.bids import CommitDerivatives, DerivativesDataSink


def init_anat_derivatives_wf(
    *,
    entities: dict,
    source_file: str,
    staging_dir: Path,
    output_dir: Path,
    name: str = "anat_derivatives_wf",
) -> pe.Workflow:
    """Stage a scan's derivatives, then commit them to OUTPUT_DIR together.

    Inputs
    ------
    t1w_conformed
        the conformed T1w image
    qc
        the scan's QC facts (dict)

    Outputs
    -------
    out_files
        the files written into OUTPUT_DIR
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w_conformed", "qc"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_files"]), name="outputnode")
    sink = {"base_directory": str(staging_dir), "entities": entities}

    ds_t1w_conform = pe.Node(
        DerivativesDataSink(
            **sink,
            desc="conform",
            suffix="T1w",
            extension=".nii.gz",
            meta_dict={
                "Description": "The input T1w image reoriented to RAS, float32, with its "
                "stored intensity scaling applied; no resampling.",
                "Sources": [source_file],
                "SpatialReference": "orig",
                # Skull-stripping comes later in the pipeline; this image is the whole input.
                "SkullStripped": False,
            },
        ),
        name="ds_t1w_conform",
        run_without_submitting=True,
        overwrite=True,
    )
    ds_qc = pe.Node(
        DerivativesDataSink(**sink, suffix="qc", extension=".json"),
        name="ds_qc",
        run_without_submitting=True,
        overwrite=True,
    )
    gather = pe.Node(niu.Merge(3), name="gather", run_without_submitting=True)
    commit = pe.Node(
        CommitDerivatives(staging_dir=str(staging_dir), output_dir=str(output_dir)),
        name="commit",
        run_without_submitting=True,
        overwrite=True,
    )
    workflow.connect([
        (inputnode, ds_t1w_conform, [("t1w_conformed", "in_file")]),
        (inputnode, ds_qc, [("qc", "in_dict")]),
        (ds_t1w_conform, gather, [("out_file", "in1"), ("out_meta", "in2")]),
        (ds_qc, gather, [("out_file", "in3")]),
        (gather, commit, [("out", "in_files")]),
        (commit, outputnode, [("out_files", "out_files")]),
    ])  # fmt:skip
    return workflow
