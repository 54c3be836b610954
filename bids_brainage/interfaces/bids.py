"""The one way a scan's outputs are written: one node that stages every derivative of the scan
(``write_derivative``) and then copies them into OUTPUT_DIR.

The staging folder is in the work directory, and the copy happens only when every step of the
scan succeeded (the node runs last), so a failed scan leaves nothing half-done in OUTPUT_DIR.
One node per scan, not one per file: Nipype runs each node with a fixed cost in its scheduler
(benchmarks/scheduler_overhead.py).
"""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    DynamicTraitedSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)
from nipype.interfaces.io import add_traits

from ..utils.derivatives import write_derivative
from ..utils.io import copy_atomic


class _WriteScanInputSpec(DynamicTraitedSpec, BaseInterfaceInputSpec):
    staging_dir = Directory(mandatory=True, desc="where the derivatives are staged")
    output_dir = Directory(mandatory=True, desc="OUTPUT_DIR")
    plan = traits.List(traits.Dict, mandatory=True,
                       desc="one entry per derivative: field, index (or None), entities (suffix "
                       "and extension included), meta (sidecar or None)")  # fmt:skip
    qc = traits.Dict(mandatory=True, desc="the scan's QC, written as its _qc.json")
    qc_entities = traits.Dict(mandatory=True, desc="entities of the QC JSON")


class _WriteScanOutputSpec(TraitedSpec):
    out_files = traits.List(File(exists=True), desc="the files written into OUTPUT_DIR")


class WriteScanDerivatives(SimpleInterface):
    """Stage every derivative of one scan under its BIDS-Derivatives name, then commit them.

    ``fields`` names the inputs that carry files (one path, or a list picked by the plan's
    ``index``); each plan entry says which field goes under which entities with which sidecar.
    """

    input_spec = _WriteScanInputSpec
    output_spec = _WriteScanOutputSpec

    def __init__(self, fields: list[str], **inputs):
        files = {name: inputs.pop(name) for name in fields if name in inputs}
        super().__init__(**inputs)
        add_traits(self.inputs, list(fields))
        self.inputs.trait_set(**files)

    def _run_interface(self, runtime):
        staging = Path(self.inputs.staging_dir)
        staged = []
        for item in self.inputs.plan:
            value = getattr(self.inputs, item["field"])
            if not isdefined(value):
                raise ValueError(f"derivative {item['field']!r} has no input")
            in_file = value if item.get("index") is None else value[item["index"]]
            staged += write_derivative(staging, item["entities"], in_file=Path(in_file),
                                       meta=item.get("meta"))  # fmt:skip
        staged += write_derivative(staging, self.inputs.qc_entities, in_dict=self.inputs.qc)
        output = Path(self.inputs.output_dir)
        self._results["out_files"] = [
            str(copy_atomic(path, output / path.relative_to(staging)))
            for path in sorted({p for p in staged if p is not None})
        ]
        return runtime
