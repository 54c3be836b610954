"""Thin Nipype interfaces over ``preprocessing.anatomical`` and ``preprocessing.features``."""

from __future__ import annotations

from pathlib import Path

import nibabel as nb
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from ..preprocessing import anatomical, features
from ..utils.templates import TISSUES, Template


class _N4InputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    stripped_grid = traits.Enum(
        "brain", "head", usedefault=True, desc="a stripped input's field: its own or a head's grid"
    )
    # no default: left unset (no denoising), the node's hash and older work folders stay valid
    denoising = traits.Enum("none", "rician", desc="denoise before N4 (ANTs, Rician model)")


class _N4OutputSpec(TraitedSpec):
    out_file = File(exists=True)
    qc = traits.Dict()


def _n4_options(inputs) -> dict:
    denoising = inputs.denoising if isdefined(inputs.denoising) else "none"
    return {"stripped_grid": inputs.stripped_grid, "denoising": denoising}


class N4Correct(SimpleInterface):
    """N4 bias-field correction."""

    input_spec = _N4InputSpec
    output_spec = _N4OutputSpec

    def _run_interface(self, runtime):
        out = Path(runtime.cwd) / "t1w_n4.nii.gz"
        self._results["qc"] = anatomical.n4_correct(Path(self.inputs.in_file), out,
                                                    **_n4_options(self.inputs))  # fmt:skip
        self._results["out_file"] = str(out)
        return runtime


class _ContrastInputSpec(_N4InputSpec):
    n4_file = File(exists=True, mandatory=True, desc="the first N4 image, where GM/WM is measured")
    mask_file = File(exists=True, mandatory=True, desc="its brain mask")


class ContrastStandardise(SimpleInterface):
    """N4 again on the conformed image raised to the power that sets its GM/WM ratio."""

    input_spec = _ContrastInputSpec
    output_spec = _N4OutputSpec

    def _run_interface(self, runtime):
        out = Path(runtime.cwd) / "t1w_contrast_n4.nii.gz"
        files = (self.inputs.in_file, self.inputs.n4_file, self.inputs.mask_file)
        self._results.update(
            out_file=str(out),
            qc=anatomical.standardise_contrast(*map(Path, files), out, **_n4_options(self.inputs)),
        )
        return runtime


class _BrainN4InputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the conformed T1w")
    mask_file = File(exists=True, mandatory=True, desc="its brain mask")
    denoising = traits.Enum("none", "rician", desc="denoise before N4 (ANTs, Rician model)")


class BrainN4(SimpleInterface):
    """N4 again, inside the brain mask, on the head-sized grid around the brain."""

    input_spec = _BrainN4InputSpec
    output_spec = _N4OutputSpec

    def _run_interface(self, runtime):
        out = Path(runtime.cwd) / "t1w_brain_n4.nii.gz"
        denoising = self.inputs.denoising if isdefined(self.inputs.denoising) else "none"
        self._results.update(out_file=str(out), qc=anatomical.n4_in_brain(
            Path(self.inputs.in_file), Path(self.inputs.mask_file), out, denoising))  # fmt:skip
        return runtime


class _BrainExtractionInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="N4-corrected T1w")
    template = traits.Dict(mandatory=True, desc="Template.to_dict()")
    seed = traits.Int(mandatory=True)
    method = traits.Enum("deepbet", "template", usedefault=True, desc="how the mask is made")
    threads = traits.Int(1, usedefault=True, nohash=True, desc="torch threads for deepbet")


class _BrainExtractionOutputSpec(TraitedSpec):
    out_mask = File(exists=True)
    head_affine = traits.List(File(exists=True), desc="native→template head affine")
    qc = traits.Dict()


class BrainExtraction(SimpleInterface):
    """Head-to-template affine; the brain mask from the warped template mask refined by k-means
    tissue classes, or from deepbet.
    """

    input_spec = _BrainExtractionInputSpec
    output_spec = _BrainExtractionOutputSpec

    def _run_interface(self, runtime):
        anatomical.set_seed(self.inputs.seed)
        out = Path(runtime.cwd) / "brain_mask.nii.gz"
        qc, affine = anatomical.brain_extract(
            Path(self.inputs.in_file),
            Template.from_dict(self.inputs.template),
            out,
            Path(runtime.cwd),
            method=self.inputs.method,
            threads=self.inputs.threads,
        )
        self._results.update(out_mask=str(out), head_affine=affine, qc=qc)
        return runtime


class _RegisterInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    in_mask = File(exists=True, mandatory=True)
    template = traits.Dict(mandatory=True)
    initial = traits.List(File(exists=True), desc="start transform; default: centres of mass")
    preset = traits.Enum("fast", "precise", usedefault=True)
    seed = traits.Int(mandatory=True)
    intensity = traits.Enum("linear", "log", usedefault=True,
                            desc="register the intensities or their log")  # fmt:skip


class _RegisterOutputSpec(TraitedSpec):
    forward = traits.List(File(exists=True))
    inverse = traits.List(File(exists=True))
    invert_flags = traits.List(traits.Bool())
    qc = traits.Dict()


class RegisterToTemplate(SimpleInterface):
    """Affine + SyN registration of the brain to the template brain."""

    input_spec = _RegisterInputSpec
    output_spec = _RegisterOutputSpec

    def _run_interface(self, runtime):
        anatomical.set_seed(self.inputs.seed)
        transforms, qc = anatomical.register_to_template(
            Path(self.inputs.in_file), Path(self.inputs.in_mask),
            Template.from_dict(self.inputs.template),
            self.inputs.initial if isdefined(self.inputs.initial) else None, self.inputs.preset,
            Path(runtime.cwd), intensity=self.inputs.intensity,
        )  # fmt:skip
        self._results.update(
            forward=transforms.forward, inverse=transforms.inverse,
            invert_flags=transforms.invert_flags, qc=qc,
        )  # fmt:skip
        return runtime


class _SegmentInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    in_mask = File(exists=True, mandatory=True)
    template = traits.Dict(mandatory=True)
    inverse = traits.List(File(exists=True), mandatory=True)
    invert_flags = traits.List(traits.Bool(), mandatory=True)
    intensity = traits.Enum("linear", "log", usedefault=True,
                            desc="segment the intensities or their log")  # fmt:skip


class _SegmentOutputSpec(TraitedSpec):
    probseg = traits.List(File(exists=True), desc="CSF, GM, WM probabilities")
    dseg = File(exists=True, desc="1 CSF, 2 GM, 3 WM")
    qc = traits.Dict()


class Segment(SimpleInterface):
    """Atropos three-class segmentation with template priors."""

    input_spec = _SegmentInputSpec
    output_spec = _SegmentOutputSpec

    def _run_interface(self, runtime):
        template = Template.from_dict(self.inputs.template)
        probabilities, labels = anatomical.segment(
            Path(self.inputs.in_file), Path(self.inputs.in_mask), template,
            anatomical.Transforms([], self.inputs.inverse, self.inputs.invert_flags),
            intensity=self.inputs.intensity,
        )  # fmt:skip
        reference = nb.load(self.inputs.in_file)
        files = []
        for tissue in TISSUES:
            path = Path(runtime.cwd) / f"probseg_{tissue}.nii.gz"
            nb.Nifti1Image(probabilities[tissue], reference.affine).to_filename(str(path))
            files.append(str(path))
        dseg = Path(runtime.cwd) / "dseg.nii.gz"
        nb.Nifti1Image(labels.astype(np.uint8), reference.affine).to_filename(str(dseg))
        self._results.update(
            probseg=files,
            dseg=str(dseg),
            qc={"method": "atropos", "intensity_scale": self.inputs.intensity},
        )
        return runtime


class _NormaliseInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="N4-corrected T1w")
    in_mask = File(exists=True, mandatory=True)
    probseg = traits.List(File(exists=True), mandatory=True, desc="CSF, GM, WM")


class _NormaliseOutputSpec(TraitedSpec):
    v2_file = File(exists=True)
    histogram = File(exists=True)
    volumes = File(exists=True)
    qc = traits.Dict()


class NormaliseAndMeasure(SimpleInterface):
    """The v2 normalised brain, the v2 histogram, tissue volumes, SNR and CNR."""

    input_spec = _NormaliseInputSpec
    output_spec = _NormaliseOutputSpec

    def _run_interface(self, runtime):
        import pandas as pd

        cwd = Path(runtime.cwd)
        image = nb.load(self.inputs.in_file)
        data = image.get_fdata(dtype=np.float32)
        mask = nb.load(self.inputs.in_mask).get_fdata() > 0.5
        probs = {
            t: nb.load(f).get_fdata(dtype=np.float32)
            for t, f in zip(TISSUES, self.inputs.probseg, strict=True)
        }
        voxel_ml = float(np.prod(image.header.get_zooms()[:3])) / 1000
        _, v2, peaks = features.normalised_brains(data, mask, probs)
        nb.Nifti1Image(v2, image.affine).to_filename(str(cwd / "v2.nii.gz"))
        table, outside = features.histogram_table(v2, mask)
        table.to_csv(cwd / "histogram.tsv", sep="\t", index=False)
        volumes = features.tissue_volumes(probs, voxel_ml)
        volume_row = {**volumes, **peaks}
        pd.DataFrame([volume_row]).to_csv(cwd / "volumes.tsv", sep="\t", index=False)
        self._results.update(
            v2_file=str(cwd / "v2.nii.gz"),
            histogram=str(cwd / "histogram.tsv"), volumes=str(cwd / "volumes.tsv"),
            qc={**{k: round(v, 4) for k, v in volume_row.items()},
                "histogram_fraction_outside": round(outside, 5),
                **features.contrast_quality(data, mask, probs)},
        )  # fmt:skip
        return runtime


class _TemplateMapsInputSpec(BaseInterfaceInputSpec):
    template = traits.Dict(mandatory=True)
    probseg = traits.List(File(exists=True), mandatory=True)
    t1w = File(exists=True, mandatory=True, desc="N4-corrected T1w (head)")
    v2_file = File(exists=True, mandatory=True)
    forward = traits.List(File(exists=True), mandatory=True)


class _TemplateMapsOutputSpec(TraitedSpec):
    modulated = traits.List(File(exists=True), desc="CSF, GM, WM volume maps")
    t1w = File(exists=True)
    v2 = File(exists=True)
    composite_warp = File(exists=True, desc="displacement field, template → native")
    qc = traits.Dict()


class TemplateSpaceMaps(SimpleInterface):
    """Warp to the template grid; tissue maps are Jacobian-modulated (they measure volume)."""

    input_spec = _TemplateMapsInputSpec
    output_spec = _TemplateMapsOutputSpec

    def _run_interface(self, runtime):
        cwd = Path(runtime.cwd)
        template = Template.from_dict(self.inputs.template)
        out = features.template_space_maps(
            template.t1w, dict(zip(TISSUES, map(Path, self.inputs.probseg), strict=True)),
            {"t1w": Path(self.inputs.t1w), "v2": Path(self.inputs.v2_file)},
            self.inputs.forward, cwd,
        )  # fmt:skip
        template_voxel_ml = float(np.prod(nb.load(template.t1w).header.get_zooms()[:3])) / 1000
        qc = {}
        for tissue, native in zip(TISSUES, self.inputs.probseg, strict=True):
            img = nb.load(native)
            native_ml = float(img.get_fdata().sum() * np.prod(img.header.get_zooms()[:3]) / 1000)
            warped_ml = float(
                nb.load(out[f"{tissue}_modulated"]).get_fdata().sum() * template_voxel_ml
            )
            qc[f"{tissue.lower()}_modulated_volume_ratio"] = round(warped_ml / native_ml, 4)
        self._results.update(
            modulated=[str(out[f"{t}_modulated"]) for t in TISSUES], t1w=str(out["t1w"]),
            v2=str(out["v2"]), composite_warp=str(out["composite_warp"]), qc=qc,
        )  # fmt:skip
        return runtime
