"""Nipype interface over ``preprocessing.conform``."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from ..preprocessing.conform import WORKING_VOXEL_MM, ConformLimits, conform_t1w


class _ConformInputSpec(BaseInterfaceInputSpec):
    in_file = File(mandatory=True, desc="the raw T1w image (existence is checked by the step)")
    limits = traits.Dict(desc="ConformLimits fields to override")
    working_voxel_mm = traits.Float(WORKING_VOXEL_MM, usedefault=True,
                                    desc="voxel size of the working grid (mm)")  # fmt:skip
    head_grid = traits.Bool(True, usedefault=True,
                            desc="cut or pad the grid to the head plus a margin")  # fmt:skip


class _ConformOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the T1w image in RAS on the working grid, float32")
    qc = traits.Dict(desc="what was found about the input")


class Conform(SimpleInterface):
    """Check a T1w is a usable 3-D brain MRI and reorient it to RAS."""

    input_spec = _ConformInputSpec
    output_spec = _ConformOutputSpec

    def _run_interface(self, runtime):
        out_file = Path(runtime.cwd) / "conformed_T1w.nii.gz"
        limits = ConformLimits(**self.inputs.limits) if self.inputs.limits else ConformLimits()
        self._results["qc"] = conform_t1w(Path(self.inputs.in_file), out_file, limits,
                                          self.inputs.working_voxel_mm,
                                          self.inputs.head_grid)  # fmt:skip
        self._results["out_file"] = str(out_file)
        return runtime
