"""Anatomical preprocessing of one T1w image."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..interfaces.anatomical import (
    BrainExtraction,
    BrainN4,
    ContrastStandardise,
    N4Correct,
    NormaliseAndMeasure,
    RegisterToTemplate,
    Segment,
    TemplateSpaceMaps,
)
from ..interfaces.conform import Conform
from ..preprocessing.anatomical import BIAS_CORRECTIONS, CONTRAST_METHODS, intensity_steps


def init_conform_wf(
    *, limits: dict | None = None, head_grid: bool = True, name: str = "conform_wf"
) -> pe.Workflow:
    """Check the raw T1w is a usable 3-D brain MRI and reorient it to RAS.

    Inputs: t1w (the raw T1w image). Outputs: t1w_conformed (RAS, float32, intensity scaling
    applied), qc (what was found about the input, a dict).
    """
    workflow = pe.Workflow(name=name)
    workflow.__desc__ = (
        "Each T1-weighted image was checked to be a readable three-dimensional volume "
        "with plausible voxel size and field of view, its stored intensity scaling was "
        "applied, and it was reoriented to RAS with NiBabel."
    )
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["t1w_conformed", "qc"]), name="outputnode")
    conform = pe.Node(Conform(limits=limits or {}, head_grid=head_grid), name="conform")
    if head_grid:
        workflow.__desc__ += (" Its grid was then cut to the head plus 16 mm (zero-padded where "
                              "the head came closer to the edge).")  # fmt:skip
    workflow.connect([
        (inputnode, conform, [("t1w", "in_file")]),
        (conform, outputnode, [("out_file", "t1w_conformed"), ("qc", "qc")]),
    ])  # fmt:skip
    return workflow


def _single_step_wf(name: str, node: pe.Node, inputs: list[str], outputs: list[str]):
    """A sub-workflow around one step: ``inputnode`` -> step -> ``outputnode``."""
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=list(inputs)), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=list(outputs)), name="outputnode")
    workflow.connect([
        (inputnode, node, [(field, field) for field in inputs]),
        (node, outputnode, [(field, field) for field in outputs]),
    ])  # fmt:skip
    return workflow


def init_n4_wf(*, stripped_grid: str = "brain", denoising: str = "none",
               name: str = "n4_wf") -> pe.Workflow:  # fmt:skip
    """N4 bias-field correction inside the head mask (a skull-stripped input's field on its
    own grid or, ``stripped_grid="head"``, on the grid a head would have), after denoising
    with ``denoising="rician"``.

    Inputs: in_file (conformed T1w). Outputs: out_file (N4-corrected T1w), qc.
    """
    node = pe.Node(N4Correct(stripped_grid=stripped_grid), name="n4")
    if denoising != "none":  # set only when used: work folders of runs without it stay valid
        node.inputs.denoising = denoising
    workflow = _single_step_wf(name, node, ["in_file"], ["out_file", "qc"])
    workflow.__desc__ = "The image was corrected for intensity non-uniformity with N4 (ANTsPy)."
    if denoising == "rician":
        workflow.__desc__ = ("The image was denoised with ANTs' non-local means filter "
                             "(DenoiseImage, Rician noise model), then corrected for intensity "
                             "non-uniformity with N4 (ANTsPy).")  # fmt:skip
    return workflow


def init_contrast_wf(*, stripped_grid: str = "brain", denoising: str = "none",
                     name: str = "contrast_wf") -> pe.Workflow:  # fmt:skip
    """The conformed image raised to the power that puts its GM/WM ratio (measured on the first
    N4 image inside the brain mask) at one value, then denoised and N4-corrected as before.

    Inputs: in_file (conformed T1w), n4_file, mask_file. Outputs: out_file, qc.
    """
    node = pe.Node(ContrastStandardise(stripped_grid=stripped_grid), name="contrast")
    if denoising != "none":
        node.inputs.denoising = denoising
    workflow = _single_step_wf(name, node, ["in_file", "n4_file", "mask_file"],
                               ["out_file", "qc"])  # fmt:skip
    workflow.__desc__ = (
        "Its contrast was then standardised: the image was raised to the power that puts its "
        "grey/white-matter intensity ratio (inside the brain mask, after N4) at a fixed value, "
        "and the correction above was run again on it."
    )
    return workflow


def init_brain_n4_wf(*, denoising: str = "none", name: str = "brain_n4_wf") -> pe.Workflow:
    """N4 again on the conformed image inside the brain mask, its field estimated on the
    head-sized grid around the brain: one path for a head and its brain given skull-stripped.

    Inputs: in_file (conformed T1w), mask_file. Outputs: out_file, qc.
    """
    node = pe.Node(BrainN4(), name="brain_n4")
    if denoising != "none":
        node.inputs.denoising = denoising
    workflow = _single_step_wf(name, node, ["in_file", "mask_file"], ["out_file", "qc"])
    workflow.__desc__ = (
        "The correction above was then run again on the image inside the brain mask, its "
        "field estimated on a grid of fixed margins around the brain, so that a head and the "
        "same brain given skull-stripped are corrected alike."
    )
    return workflow


def init_brain_extraction_wf(
    *, template: dict, seed: int, method: str = "deepbet", threads: int = 1,
    name: str = "brain_extraction_wf",
) -> pe.Workflow:  # fmt:skip
    """Head-to-template affine and a brain mask (template method or deepbet).

    Inputs: in_file (N4-corrected T1w). Outputs: out_mask, head_affine, qc.
    """
    node = pe.Node(BrainExtraction(template=template, seed=seed, method=method,
                                   threads=threads), name="brain_extraction")  # fmt:skip
    workflow = _single_step_wf(name, node, ["in_file"], ["out_mask", "head_affine", "qc"])
    registered = (f"The head was registered affinely to the {template['name']} template (with "
                  "head, initialised by centre of mass)")  # fmt:skip
    if method == "deepbet":
        workflow.__desc__ = (f"{registered}; the brain was extracted with deepbet (Fisch et al., "
                             "2024), a convolutional network run on the CPU.")  # fmt:skip
    else:
        workflow.__desc__ = (
            f"{registered}; the template brain mask was brought back and refined with a k-means "
            "tissue classification to extract the brain (inputs already skull-stripped were "
            "detected and only cleaned)."
        )
    return workflow


def init_registration_wf(
    *, template: dict, preset: str, seed: int, intensity: str = "linear",
    name: str = "registration_wf",
) -> pe.Workflow:  # fmt:skip
    """Brain-to-template affine + SyN registration (of the intensities or their log).

    Inputs: in_file, in_mask, initial (head affine; unset: centres of mass). Outputs: forward,
    inverse, invert_flags, qc.
    """
    node = pe.Node(
        RegisterToTemplate(template=template, preset=preset, seed=seed, intensity=intensity),
        name="registration",
    )
    workflow = _single_step_wf(
        name, node, ["in_file", "in_mask", "initial"], ["forward", "inverse", "invert_flags", "qc"]
    )
    workflow.__desc__ = (
        "The brain was registered to the template brain with affine and SyN transforms "
        f"('{preset}' preset)"
        + (
            ", both on the logarithm of their intensities (which makes the warp blind to a "
            "power-law change of contrast)."
            if intensity == "log"
            else "."
        )
    )
    return workflow


def init_segmentation_wf(
    *, template: dict, intensity: str = "linear", name: str = "segmentation_wf"
) -> pe.Workflow:
    """Atropos CSF/GM/WM segmentation with the template's priors, on the intensities or
    (``intensity="log"``) their log.

    Inputs: in_file, in_mask, inverse, invert_flags. Outputs: probseg (CSF, GM, WM), dseg, qc.
    """
    node = pe.Node(Segment(template=template, intensity=intensity), name="segmentation")
    workflow = _single_step_wf(
        name, node, ["in_file", "in_mask", "inverse", "invert_flags"], ["probseg", "dseg", "qc"]
    )
    workflow.__desc__ = (
        "The brain was segmented into CSF, grey and white matter with Atropos using the "
        "template's tissue priors" + (
            " on the logarithm of the intensities (which makes the classes blind to a "
            "power-law change of contrast)." if intensity == "log" else ".")
    )  # fmt:skip
    return workflow


def init_normalisation_wf(*, name: str = "normalisation_wf") -> pe.Workflow:
    """v1/v2 intensity normalisation, histogram, tissue volumes, SNR/CNR.

    Inputs: in_file, in_mask, probseg. Outputs: v2_file, histogram, volumes, qc.
    """
    node = pe.Node(NormaliseAndMeasure(), name="measures")
    workflow = _single_step_wf(
        name, node, ["in_file", "in_mask", "probseg"],
        ["v2_file", "histogram", "volumes", "qc"],
    )  # fmt:skip
    workflow.__desc__ = (
        "Intensities were normalised with white stripe (v1: white-matter peak at 1) and with "
        "the v2 method of Owkin's brain-age tutorial (2018), which pins both the grey- and "
        "white-matter peaks (here at 0.5 and 0.8); the 200-bin "
        "histogram of the v2 brain and the tissue volumes were computed."
    )
    return workflow


def init_template_maps_wf(*, template: dict, name: str = "template_maps_wf") -> pe.Workflow:
    """Warp to the template grid; tissue maps modulated by the Jacobian determinant.

    Inputs: probseg, t1w, v2_file, forward. Outputs: modulated, t1w, v2, composite_warp, qc.
    """
    node = pe.Node(TemplateSpaceMaps(template=template), name="template_maps")
    workflow = _single_step_wf(
        name, node, ["probseg", "t1w", "v2_file", "forward"],
        ["modulated", "t1w", "v2", "composite_warp", "qc"],
    )  # fmt:skip
    workflow.__desc__ = (
        "Tissue maps were warped to the template and modulated by the Jacobian determinant."
    )
    return workflow


def init_anat_preproc_wf(
    *,
    template: dict,
    registration: str = "fast",
    seed: int,
    limits: dict | None = None,
    brain_extraction: str = "deepbet",
    field_of_view: str = "head",
    intensity_scale: str = "linear",
    stripped_n4_grid: str = "brain",
    denoising: str = "none",
    contrast_standardisation: str = "none",
    bias_correction: str = "head",
    threads: int = 1,
    name: str = "anat_preproc_wf",
) -> pe.Workflow:
    """Conform → N4 → brain extraction (→ contrast standardisation and N4 again, or N4 again inside
    the brain) → registration →
    segmentation → normalisation, features.

    Inputs
    ------
    t1w
        the raw T1w image

    Outputs
    -------
    t1w_preproc, brain_mask, dseg, probseg (CSF, GM, WM), xfm (template ← native displacement
    field), v2 (native), t1w_tpl, v2_tpl, modulated (CSF, GM, WM), histogram, volumes, and the
    QC dicts qc_conform, qc_n4, qc_brain, qc_registration, qc_segmentation, qc_measures,
    qc_template_maps
    """
    if field_of_view not in ("head", "stored"):
        raise ValueError(f"field_of_view must be head or stored, not {field_of_view!r}")
    workflow = pe.Workflow(name=name)
    outputs = ["t1w_preproc", "brain_mask", "dseg", "probseg", "xfm", "v2", "t1w_tpl", "v2_tpl",
               "modulated", "histogram", "volumes", "qc_conform", "qc_n4", "qc_brain",
               "qc_registration", "qc_segmentation", "qc_measures",
               "qc_template_maps"]  # fmt:skip
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=outputs), name="outputnode")
    conform_wf = init_conform_wf(limits=limits, head_grid=field_of_view == "head")
    if contrast_standardisation not in CONTRAST_METHODS:
        raise ValueError(f"contrast_standardisation must be one of {CONTRAST_METHODS}, "
                         f"not {contrast_standardisation!r}")  # fmt:skip
    if bias_correction not in BIAS_CORRECTIONS:
        raise ValueError(f"bias_correction must be one of {BIAS_CORRECTIONS}, "
                         f"not {bias_correction!r}")  # fmt:skip
    if bias_correction == "brain" and contrast_standardisation != "none":
        raise ValueError("bias_correction 'brain' and contrast_standardisation "
                         f"{contrast_standardisation!r} cannot be combined")  # fmt:skip
    n4_wf = init_n4_wf(stripped_grid=stripped_n4_grid, denoising=denoising)
    # what every step after brain extraction reads: the N4 image, its contrast-standardised one,
    # or the one corrected again inside the brain
    corrected = n4_wf
    if bias_correction == "brain":
        corrected = init_brain_n4_wf(denoising=denoising)
        workflow.connect(conform_wf, "outputnode.t1w_conformed", corrected, "inputnode.in_file")
    if contrast_standardisation == "power":
        corrected = init_contrast_wf(stripped_grid=stripped_n4_grid, denoising=denoising)
        workflow.connect([
            (conform_wf, corrected, [("outputnode.t1w_conformed", "inputnode.in_file")]),
            (n4_wf, corrected, [("outputnode.out_file", "inputnode.n4_file")]),
        ])  # fmt:skip
    brain_extraction_wf = init_brain_extraction_wf(
        template=template, seed=seed, method=brain_extraction, threads=threads
    )
    registration_scale, segmentation_scale = intensity_steps(intensity_scale)
    registration_wf = init_registration_wf(
        template=template, preset=registration, seed=seed, intensity=registration_scale
    )
    segmentation_wf = init_segmentation_wf(template=template, intensity=segmentation_scale)
    normalisation_wf = init_normalisation_wf()
    template_maps_wf = init_template_maps_wf(template=template)
    # The head affine starts the registration, but for deepbet masks on the head's grid: the
    # brains' centres of mass then start it, which the field of view cannot move.
    if brain_extraction == "template" or field_of_view == "stored":
        workflow.connect(brain_extraction_wf, "outputnode.head_affine",
                         registration_wf, "inputnode.initial")  # fmt:skip
    workflow.connect([
        (inputnode, conform_wf, [("t1w", "inputnode.t1w")]),
        (conform_wf, n4_wf, [("outputnode.t1w_conformed", "inputnode.in_file")]),
        (n4_wf, brain_extraction_wf, [("outputnode.out_file", "inputnode.in_file")]),
        (corrected, registration_wf, [("outputnode.out_file", "inputnode.in_file")]),
        (brain_extraction_wf, registration_wf, [("outputnode.out_mask", "inputnode.in_mask")]),
        (corrected, segmentation_wf, [("outputnode.out_file", "inputnode.in_file")]),
        (brain_extraction_wf, segmentation_wf, [("outputnode.out_mask", "inputnode.in_mask")]),
        (registration_wf, segmentation_wf, [
            ("outputnode.inverse", "inputnode.inverse"),
            ("outputnode.invert_flags", "inputnode.invert_flags")]),
        (corrected, normalisation_wf, [("outputnode.out_file", "inputnode.in_file")]),
        (brain_extraction_wf, normalisation_wf, [("outputnode.out_mask", "inputnode.in_mask")]),
        (segmentation_wf, normalisation_wf, [("outputnode.probseg", "inputnode.probseg")]),
        (segmentation_wf, template_maps_wf, [("outputnode.probseg", "inputnode.probseg")]),
        (corrected, template_maps_wf, [("outputnode.out_file", "inputnode.t1w")]),
        (normalisation_wf, template_maps_wf, [("outputnode.v2_file", "inputnode.v2_file")]),
        (registration_wf, template_maps_wf, [("outputnode.forward", "inputnode.forward")]),
        (conform_wf, outputnode, [("outputnode.qc", "qc_conform")]),
        (corrected, outputnode, [("outputnode.out_file", "t1w_preproc"),
                                 ("outputnode.qc", "qc_n4")]),
        (brain_extraction_wf, outputnode, [("outputnode.out_mask", "brain_mask"),
                                           ("outputnode.qc", "qc_brain")]),
        (registration_wf, outputnode, [("outputnode.qc", "qc_registration")]),
        (segmentation_wf, outputnode, [("outputnode.probseg", "probseg"),
                                       ("outputnode.dseg", "dseg"),
                                       ("outputnode.qc", "qc_segmentation")]),
        (normalisation_wf, outputnode, [("outputnode.histogram", "histogram"),
                                        ("outputnode.volumes", "volumes"),
                                        ("outputnode.v2_file", "v2"),
                                        ("outputnode.qc", "qc_measures")]),
        (template_maps_wf, outputnode, [("outputnode.composite_warp", "xfm"),
                                        ("outputnode.t1w", "t1w_tpl"), ("outputnode.v2", "v2_tpl"),
                                        ("outputnode.modulated", "modulated"),
                                        ("outputnode.qc", "qc_template_maps")]),
    ])  # fmt:skip
    if corrected is not n4_wf:
        workflow.connect(brain_extraction_wf, "outputnode.out_mask",
                         corrected, "inputnode.mask_file")  # fmt:skip
    return workflow
