"""Every derivative of a scan is written here, by one WriteScanDerivatives node per scan."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..interfaces.bids import WriteScanDerivatives
from ..models.predict import BRAINAGE_COLUMNS, ROI_COLUMNS
from ..utils.templates import TISSUES

TISSUE_LEVELS = {"1": "CSF", "2": "GM", "3": "WM"}
HISTOGRAM_COLUMNS = {
    "bin": {"Description": "Bin index (0-199)"},
    "lower": {"Description": "Lower edge of the bin, v2-normalised intensity"},
    "upper": {"Description": "Upper edge of the bin, v2-normalised intensity"},
    "fraction": {"Description": "Fraction of brain voxels whose v2 intensity falls in the bin"},
}
VOLUME_COLUMNS = {
    **{
        f"{t.lower()}_ml": {"Description": f"{t} volume (sum of probabilities)", "Units": "ml"}
        for t in TISSUES
    },
    "tiv_ml": {"Description": "Total intracranial volume, CSF + GM + WM", "Units": "ml"},
    **{
        f"{t.lower()}_fraction": {"Description": f"{t} volume as a fraction of tiv_ml"}
        for t in TISSUES
    },
    "gm_peak": {"Description": "Grey-matter intensity peak of the N4-corrected T1w"},
    "wm_peak": {"Description": "White-matter intensity peak of the N4-corrected T1w"},
}


def pick(items, index):
    """Element ``index`` of a list (used inside Nipype connections)."""
    return items[index]


def init_anat_derivatives_wf(
    *,
    entities: dict,
    source_file: str,
    template: dict,
    staging_dir: Path,
    output_dir: Path,
    with_brainage: bool = False,
    with_local: bool = False,
    with_local_pad: bool = False,
    with_occlusion: bool = False,
    with_unoise: bool = False,
    name: str = "anat_derivatives_wf",
) -> pe.Workflow:
    """Stage a scan's derivatives, then commit them to OUTPUT_DIR together.

    Inputs
    ------
    t1w_preproc, brain_mask, dseg, probseg (CSF, GM, WM), xfm, v2, t1w_tpl, v2_tpl,
    modulated (CSF, GM, WM), histogram, volumes, qc, brainage (when ``with_brainage``)

    Outputs
    -------
    out_files
        the files written into OUTPUT_DIR
    """
    fields = ["t1w_preproc", "brain_mask", "dseg", "probseg", "xfm", "v2", "t1w_tpl", "v2_tpl",
              "modulated", "histogram", "volumes", "qc", "brainage", "local_map", "pad_map",
              "roi_table", "occlusion_map", "unoise_map"]  # fmt:skip
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=fields), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_files"]), name="outputnode")
    space = {"space": template["name"]}
    tpl_ents = {**entities, "resolution": str(template["resolution"])}
    native = {"Sources": [source_file], "SpatialReference": "orig"}
    in_template = {
        "Sources": [source_file],
        "SpatialReference": template["name"],
        "TemplateSource": template["source"],
        "Resolution": f"{template['resolution']} mm isotropic template grid",
    }
    sinks = [
        # (input field, list index, entities of the file, entity set, sidecar)
        ("t1w_preproc", None,
         {"desc": "preproc", "suffix": "T1w"}, entities,
         {**native, "SkullStripped": False, "Description": "N4 bias-field corrected T1w, RAS"}),
        ("brain_mask", None, {"desc": "brain", "suffix": "mask"}, entities,
         {**native, "Type": "Brain"}),
        ("dseg", None, {"suffix": "dseg"}, entities,
         {**native, "Labels": TISSUE_LEVELS, "Description": "Atropos CSF/GM/WM labels"}),
        *[("probseg", i, {"label": t, "suffix": "probseg"}, entities,
           {**native, "Description": f"{t} probability (Atropos, template priors)"})
          for i, t in enumerate(TISSUES)],
        ("xfm", None,
         {"suffix": "xfm", "extra": {"from": "T1w", "to": template["name"], "mode": "image"}},
         entities, None),
        ("v2", None, {"desc": "normv2", "suffix": "T1w"}, entities,
         {**native, "SkullStripped": True,
          "Description": "Brain, v2-normalised: GM peak at 0.5, WM peak at 0.8"}),
        ("t1w_tpl", None, {**space, "desc": "preproc", "suffix": "T1w"}, tpl_ents,
         {**in_template, "SkullStripped": False}),
        ("v2_tpl", None, {**space, "desc": "normv2", "suffix": "T1w"}, tpl_ents,
         {**in_template, "SkullStripped": True,
          "Description": "Brain, v2-normalised (GM peak 0.5, WM peak 0.8), in template space"}),
        *[("modulated", i,
           {**space, "label": t, "desc": "modulated", "suffix": "probseg"}, tpl_ents,
           {**in_template, "Description": f"{t} probability times the Jacobian determinant: "
            "each voxel holds the native volume (in template voxels) it maps to"})
          for i, t in enumerate(TISSUES)],
        ("histogram", None, {"desc": "histogram", "suffix": "features", "extension": ".tsv"},
         entities, HISTOGRAM_COLUMNS),
        ("volumes", None, {"desc": "volumes", "suffix": "features", "extension": ".tsv"},
         entities, VOLUME_COLUMNS),
    ]  # fmt:skip
    if with_brainage:
        sinks.append(("brainage", None, {"suffix": "brainage", "extension": ".tsv"}, entities,
                      BRAINAGE_COLUMNS))  # fmt:skip

    def brainage_map(field, desc, units, description):
        """A template-space brain-age map (local age, PAD or importance) and its sidecar."""
        return (field, None, {**space, "desc": desc, "suffix": "brainage"},
                tpl_ents, {**in_template, "Units": units, "Description": description})  # fmt:skip

    if with_local:
        sinks += [
            brainage_map("local_map", "local", "year", "Local brain age (U-Net, Popescu et al. "
                         "2021) at every brain voxel; 0 outside the brain"),
            ("roi_table", None,
             {"desc": "roi", "suffix": "brainage", "extension": ".tsv"}, entities, ROI_COLUMNS),
        ]  # fmt:skip
    if with_occlusion:
        sinks.append(brainage_map(
            "occlusion_map", "occlusion", "year", "Occlusion importance: change of the global "
            "predicted age when a 32 mm cube around the voxel is set to zero (mean over the cubes "
            "covering it); 0 outside the brain"))  # fmt:skip
    if with_unoise:
        sinks.append(brainage_map(
            "unoise_map", "unoise", "arbitrary", "U-noise importance (seed 003): 1 minus the "
            "noise level (0-1 between v_min and v_max) the noise model lets the frozen global "
            "model tolerate at the voxel; 1 = most important; 0 outside the brain"))  # fmt:skip
    if with_local and with_local_pad:
        sinks.append(brainage_map(
            "pad_map", "localpad", "year", "Local brain-PAD: local brain age minus chronological "
            "age, uncorrected; 0 outside the brain"))  # fmt:skip
    plan = []
    for field, item, settings, ents, sidecar in sinks:
        settings = dict(settings)
        extra = settings.pop("extra", {})
        extension = settings.pop("extension", ".nii.gz")
        entities_of_file = {**ents, **extra, **settings, "extension": extension}
        plan.append({"field": field, "index": item, "meta": sidecar,
                     "entities": entities_of_file})  # fmt:skip
    used = sorted({entry["field"] for entry in plan})
    write = pe.Node(
        WriteScanDerivatives(fields=used, staging_dir=str(staging_dir), output_dir=str(output_dir),
                             plan=plan, qc_entities={**entities, "suffix": "qc",
                                                     "extension": ".json"}),
        name="write_derivatives",
        overwrite=True,  # a rerun puts back what was deleted from OUTPUT_DIR
    )  # fmt:skip
    workflow.connect([(inputnode, write, [(field, field) for field in (*used, "qc")]),
                      (write, outputnode, [("out_files", "out_files")])])  # fmt:skip
    return workflow
