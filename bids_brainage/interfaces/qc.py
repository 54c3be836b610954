"""Collect a scan's QC facts from every step into one JSON-ready dict, with flags."""

from __future__ import annotations

from nipype.interfaces.base import BaseInterfaceInputSpec, SimpleInterface, TraitedSpec, traits

from .. import __version__
from ..preprocessing.qc import derive_flags

STEPS = (
    "conform",
    "n4",
    "brain_extraction",
    "registration",
    "segmentation",
    "measures",
    "template_maps",
)


class _AssembleQCInputSpec(BaseInterfaceInputSpec):
    scan = traits.Dict(mandatory=True, desc="who and where the scan is from")
    template = traits.Dict(mandatory=True, desc="the template used and its source")
    conform = traits.Dict(mandatory=True)
    n4 = traits.Dict(mandatory=True)
    brain_extraction = traits.Dict(mandatory=True)
    registration = traits.Dict(mandatory=True)
    segmentation = traits.Dict(mandatory=True)
    measures = traits.Dict(mandatory=True)
    template_maps = traits.Dict(mandatory=True)


class _AssembleQCOutputSpec(TraitedSpec):
    qc = traits.Dict()


class AssembleQC(SimpleInterface):
    """One dict per scan: identity, template, each step's findings, and all flags together."""

    input_spec = _AssembleQCInputSpec
    output_spec = _AssembleQCOutputSpec

    def _run_interface(self, runtime):
        steps = {step: getattr(self.inputs, step) for step in STEPS}
        self._results["qc"] = {
            "bids_brainage_version": __version__,
            "scan": self.inputs.scan,
            "template": {k: self.inputs.template[k] for k in ("name", "resolution", "source")},
            **steps,
            "flags": derive_flags(steps),
        }
        return runtime
