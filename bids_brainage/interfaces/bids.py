"""The one way outputs are written: a DerivativesDataSink-style interface, and the commit step.

A sink writes into a staging folder in the work directory; ``CommitDerivatives`` copies a
scan's staged files into OUTPUT_DIR only when every step of that scan succeeded, so a failed
scan leaves nothing half-done in OUTPUT_DIR.
"""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from ..utils.derivatives import write_derivative
from ..utils.io import copy_atomic


class _DerivativesDataSinkInputSpec(BaseInterfaceInputSpec):
    base_directory = Directory(mandatory=True, desc="root the derivative path is relative to")
    entities = traits.Dict(
        mandatory=True, desc="BIDS entities of the scan (subject, session, ...)"
    )
    suffix = traits.Str(mandatory=True)
    extension = traits.Str(mandatory=True, desc="e.g. .nii.gz, .tsv, .json")
    desc = traits.Str(desc="desc- entity")
    space = traits.Str(desc="space- entity")
    label = traits.Str(desc="label- entity")
    in_file = File(exists=True, desc="a file to write under the derivative name")
    in_dict = traits.Dict(desc="JSON content to write (for .json outputs)")
    meta_dict = traits.Dict(desc="the JSON sidecar of an image or table")


class _DerivativesDataSinkOutputSpec(TraitedSpec):
    out_file = File(desc="the written file")
    out_meta = File(desc="its JSON sidecar, if any")


class DerivativesDataSink(SimpleInterface):
    """Write one derivative (and its sidecar) under its BIDS-Derivatives name."""

    input_spec = _DerivativesDataSinkInputSpec
    output_spec = _DerivativesDataSinkOutputSpec

    def _run_interface(self, runtime):
        entities = dict(self.inputs.entities)
        entities.update(suffix=self.inputs.suffix, extension=self.inputs.extension)
        for name in ("desc", "space", "label"):
            value = getattr(self.inputs, name)
            if isdefined(value):
                entities[name] = value
        inputs = {name: getattr(self.inputs, name) for name in ("in_file", "in_dict", "meta_dict")}
        given = {k: v for k, v in inputs.items() if isdefined(v)}
        out_file, sidecar = write_derivative(
            Path(self.inputs.base_directory), entities, in_file=given.get("in_file"),
            in_dict=given.get("in_dict"), meta=given.get("meta_dict"),
        )  # fmt:skip
        self._results["out_file"] = str(out_file)
        if sidecar is not None:
            self._results["out_meta"] = str(sidecar)
        return runtime


class _CommitInputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(File(exists=True), mandatory=True, desc="staged derivatives")
    staging_dir = Directory(mandatory=True)
    output_dir = Directory(mandatory=True)


class _CommitOutputSpec(TraitedSpec):
    out_files = traits.List(File(exists=True))


class CommitDerivatives(SimpleInterface):
    """Copy a scan's staged derivatives (and their sidecars) into OUTPUT_DIR, each atomically."""

    input_spec = _CommitInputSpec
    output_spec = _CommitOutputSpec

    def _run_interface(self, runtime):
        staging, output = Path(self.inputs.staging_dir), Path(self.inputs.output_dir)
        written = []
        for staged in sorted({Path(f) for f in self.inputs.in_files}):
            relative = staged.relative_to(staging)
            written.append(str(copy_atomic(staged, output / relative)))
        self._results["out_files"] = written
        return runtime
