"""Collect a scan's QC facts from every step into one JSON-ready dict."""

from __future__ import annotations

from nipype.interfaces.base import BaseInterfaceInputSpec, SimpleInterface, TraitedSpec, traits

from .. import __version__


class _AssembleQCInputSpec(BaseInterfaceInputSpec):
    scan = traits.Dict(mandatory=True, desc="who and where the scan is from")
    conform = traits.Dict(mandatory=True, desc="QC of the conform step")


class _AssembleQCOutputSpec(TraitedSpec):
    qc = traits.Dict()


class AssembleQC(SimpleInterface):
    """One dict per scan: identity, each step's findings, and all flags together."""

    input_spec = _AssembleQCInputSpec
    output_spec = _AssembleQCOutputSpec

    def _run_interface(self, runtime):
        steps = {"conform": self.inputs.conform}
        flags = sorted({flag for step in steps.values() for flag in step.get("flags", [])})
        self._results["qc"] = {
            "bids_brainage_version": __version__,
            "scan": self.inputs.scan,
            **steps,
            "flags": flags,
        }
        return runtime
