"""Brain-age prediction of one scan with the selected bundles (thin wrapper)."""

from __future__ import annotations

import os

import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)


class _PredictBrainAgeInputSpec(BaseInterfaceInputSpec):
    histogram = File(exists=True, mandatory=True, desc="v2 histogram features TSV")
    modulated = InputMultiObject(File(exists=True), mandatory=True,
                                 desc="template-space CSF, GM, WM modulated maps")  # fmt:skip
    v2_tpl = File(exists=True, mandatory=True, desc="v2-normalised brain in template space")
    bundles = traits.List(traits.Str, mandatory=True, desc="bundle folders")
    template = traits.Dict(mandatory=True, desc="the template of the run (contract check)")
    age = traits.Either(None, traits.Float, usedefault=True, desc="chronological age")
    qc = traits.Dict(desc="the scan's QC (its flags mark untrustworthy predictions)")
    threads = traits.Int(1, usedefault=True)


class _PredictBrainAgeOutputSpec(TraitedSpec):
    out_table = File(exists=True, desc="one row per bundle")


class PredictBrainAge(SimpleInterface):
    """Every selected bundle on one scan's features; a TSV with one row per bundle."""

    input_spec = _PredictBrainAgeInputSpec
    output_spec = _PredictBrainAgeOutputSpec

    def _run_interface(self, runtime):
        from ..models.bundle import load_bundle
        from ..models.inputs import ScanFeatures
        from ..models.predict import predict_table
        from ..preprocessing.qc import gm_wm_peak_ratio, preprocessing_choices

        modulated = dict(zip(("CSF", "GM", "WM"), self.inputs.modulated, strict=True))
        features = ScanFeatures(histogram=self.inputs.histogram,
                                tissue={t: modulated[t] for t in ("CSF", "GM", "WM")},
                                t1w=self.inputs.v2_tpl)  # fmt:skip
        bundles = [load_bundle(path, template=self.inputs.template, threads=self.inputs.threads)
                   for path in self.inputs.bundles]  # fmt:skip
        qc = self.inputs.qc if isdefined(self.inputs.qc) else {}
        measures = qc.get("measures", {})
        conform = qc.get("conform", {})
        table = predict_table(bundles, features, self.inputs.age, qc.get("flags", []),
                              preprocessing_choices(qc) if qc else None,
                              conform.get("voxel_size_mm"),
                              gm_wm_peak_ratio(measures), measures.get("cnr_gm_wm"))  # fmt:skip
        out = os.path.join(runtime.cwd, "brainage.tsv")
        table.to_csv(out, sep="\t", index=False, na_rep="n/a")
        self._results["out_table"] = out
        return runtime


def _scan_and_bundle(inputs, v2_tpl=None):
    """The scan's template-space features and the bundle, checked against the run's template."""
    from ..models.bundle import load_bundle
    from ..models.inputs import ScanFeatures

    modulated = dict(zip(("CSF", "GM", "WM"), inputs.modulated, strict=True))
    features = ScanFeatures(histogram=None, tissue={t: modulated[t] for t in ("CSF", "GM", "WM")},
                            t1w=v2_tpl)  # fmt:skip
    bundle = load_bundle(inputs.bundle, template=inputs.template, threads=inputs.threads)
    return features, bundle


class _PredictLocalBrainAgeInputSpec(BaseInterfaceInputSpec):
    modulated = InputMultiObject(File(exists=True), mandatory=True,
                                 desc="template-space CSF, GM, WM modulated maps")  # fmt:skip
    bundle = traits.Str(mandatory=True, desc="local-unet bundle folder")
    template = traits.Dict(mandatory=True, desc="the template of the run (contract, brain mask)")
    atlas = File(exists=True, mandatory=True, desc="Harvard-Oxford labels on the template grid")
    atlas_names = traits.List(traits.Str, mandatory=True, desc="region names of labels 1..R")
    age = traits.Either(None, traits.Float, usedefault=True, desc="chronological age")
    threads = traits.Int(1, usedefault=True)


class _PredictLocalBrainAgeOutputSpec(TraitedSpec):
    local_map = File(exists=True, desc="local brain age (years), zero outside the brain")
    pad_map = File(desc="local brain-PAD (years), when the age is known")
    roi_table = File(exists=True, desc="whole-brain and per-ROI means")


class PredictLocalBrainAge(SimpleInterface):
    """A local-unet bundle on one scan: the local brain-age map, its PAD map and ROI means."""

    input_spec = _PredictLocalBrainAgeInputSpec
    output_spec = _PredictLocalBrainAgeOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib

        from ..models.local import local_outputs
        from ..utils.tables import write_tsv

        features, bundle = _scan_and_bundle(self.inputs)
        reference = nib.load(features.tissue["GM"])
        mask = np.asarray(nib.load(self.inputs.template["brain_mask"]).dataobj) > 0
        labels = np.asarray(nib.load(self.inputs.atlas).dataobj)
        names = list(self.inputs.atlas_names)
        local, pad, table = local_outputs(bundle.predict_local(features), mask, labels, names,
                                          self.inputs.age)  # fmt:skip
        for key, volume in (("local_map", local), ("pad_map", pad)):
            if volume is not None:
                path = os.path.join(runtime.cwd, f"{key}.nii.gz")
                nib.Nifti1Image(volume, reference.affine).to_filename(path)
                self._results[key] = path
        self._results["roi_table"] = os.path.join(runtime.cwd, "roi.tsv")
        write_tsv(table, self._results["roi_table"], years=["mean_local_brainage",
                                                           "mean_local_pad"])  # fmt:skip
        return runtime


class _ImportanceInputSpec(BaseInterfaceInputSpec):
    modulated = InputMultiObject(File(exists=True), mandatory=True,
                                 desc="template-space CSF, GM, WM modulated maps")  # fmt:skip
    v2_tpl = File(exists=True, mandatory=True, desc="v2-normalised brain in template space")
    bundle = traits.Str(mandatory=True, desc="a volume-input global bundle, or a unoise bundle")
    template = traits.Dict(mandatory=True, desc="the template of the run (contract, brain mask)")
    threads = traits.Int(1, usedefault=True)


class _OcclusionInputSpec(_ImportanceInputSpec):
    patch = traits.Int(16, usedefault=True, desc="patch edge in template voxels")


class _OcclusionOutputSpec(TraitedSpec):
    out_map = File(exists=True, desc="change of predicted age when each region is hidden")


class OcclusionImportance(SimpleInterface):
    """Seed 000's occlusion map of one scan for one global model (batched patches)."""

    input_spec = _OcclusionInputSpec
    output_spec = _OcclusionOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib

        from ..models.importance import occlusion_map

        features, bundle = _scan_and_bundle(self.inputs, self.inputs.v2_tpl)
        kind = bundle.estimator.input
        volume = bundle.load_inputs(features, kind)
        mask = np.asarray(nib.load(self.inputs.template["brain_mask"]).dataobj) > 0
        importance, _ = occlusion_map(
            volume, lambda batch: bundle.predict_inputs({kind: batch}), mask,
            patch=self.inputs.patch, stride=self.inputs.patch)  # fmt:skip
        out = os.path.join(runtime.cwd, "occlusion.nii.gz")
        nib.Nifti1Image(importance, nib.load(features.tissue["GM"]).affine).to_filename(out)
        self._results["out_map"] = out
        return runtime


class UNoiseImportance(SimpleInterface):
    """Seed 003's U-noise importance map of one scan (1 - tolerated noise)."""

    input_spec = _ImportanceInputSpec
    output_spec = _OcclusionOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib

        features, bundle = _scan_and_bundle(self.inputs, self.inputs.v2_tpl)
        brain = np.asarray(nib.load(self.inputs.template["brain_mask"]).dataobj) > 0
        importance = bundle.predict_importance(features, brain)
        out = os.path.join(runtime.cwd, "unoise.nii.gz")
        nib.Nifti1Image(importance, nib.load(features.tissue["GM"]).affine).to_filename(out)
        self._results["out_map"] = out
        return runtime
