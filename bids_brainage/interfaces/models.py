"""Brain-age prediction of one scan with the selected bundles (thin wrapper)."""

from __future__ import annotations

import os

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
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
    threads = traits.Int(1, usedefault=True)


class _PredictBrainAgeOutputSpec(TraitedSpec):
    out_table = File(exists=True, desc="one row per bundle")
    predictions = traits.Dict(desc="model name -> predicted age")


class PredictBrainAge(SimpleInterface):
    """Every selected bundle on one scan's features; a TSV with one row per bundle."""

    input_spec = _PredictBrainAgeInputSpec
    output_spec = _PredictBrainAgeOutputSpec

    def _run_interface(self, runtime):
        from ..models.bundle import load_bundle
        from ..models.inputs import ScanFeatures
        from ..models.predict import predict_table

        modulated = dict(zip(("CSF", "GM", "WM"), self.inputs.modulated, strict=True))
        features = ScanFeatures(histogram=self.inputs.histogram,
                                tissue={t: modulated[t] for t in ("GM", "WM")},
                                t1w=self.inputs.v2_tpl)  # fmt:skip
        bundles = [load_bundle(path, template=self.inputs.template, threads=self.inputs.threads)
                   for path in self.inputs.bundles]  # fmt:skip
        table = predict_table(bundles, features, self.inputs.age)
        out = os.path.join(runtime.cwd, "brainage.tsv")
        table.to_csv(out, sep="\t", index=False, na_rep="n/a")
        self._results["out_table"] = out
        predicted = zip(table["model"], table["predicted_age"], strict=True)
        self._results["predictions"] = dict(predicted)
        return runtime
