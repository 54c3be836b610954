"""Time to draw one scan's maps at the 2 mm grid, in a fresh process with 2 threads: the local
brain-age map with its PAD map and ROI table, the occlusion map of the global model and the
U-noise importance map (issue 5's target: all three ≤ 30 s per scan).

    python benchmarks/maps_inference.py DERIVATIVES [--local B] [--global B] [--unoise B]

DERIVATIVES holds participant-level outputs (e.g. the IXI run of
``scripts/train_default_bundle.py``); the bundles default to the packaged default-local,
default and default-unoise. Each step is what its participant-level interface computes
(bundle load with checksums included). Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = r"""
import json, sys, time
start = time.perf_counter()
import numpy as np, nibabel as nib, torch
torch.set_num_threads(2)
from pathlib import Path
from bids_brainage.models.bundle import load_bundle, resolve_bundle
from bids_brainage.models.importance import occlusion_map
from bids_brainage.models.inputs import ScanFeatures
from bids_brainage.models.local import local_outputs
from bids_brainage.utils.atlas import harvard_oxford
from bids_brainage.utils.derivatives import ScanDerivatives
from bids_brainage.utils.templates import resolve_template
from bids_brainage.workflows.brainage import OCCLUSION_MM
local_spec, global_spec, unoise_spec, derivatives, subject, cache = sys.argv[1:7]
times = {"import": time.perf_counter() - start}
template = resolve_template(Path(cache), resolution=2)
labels, names = harvard_oxford(template, Path(cache))
brain = np.asarray(nib.load(template.to_dict()["brain_mask"]).dataobj) > 0
atlas = np.asarray(nib.load(labels).dataobj)
features = ScanFeatures(**ScanDerivatives(Path(derivatives), {"subject": subject}, template.name,
                                          "2").model_inputs())

tick = time.perf_counter()
local = load_bundle(resolve_bundle(local_spec), threads=2)
maps = local_outputs(local.predict_local(features), brain, atlas, names, 50.0)
times["local"] = time.perf_counter() - tick

tick = time.perf_counter()
model = load_bundle(resolve_bundle(global_spec), threads=2)
(kind,) = model.inputs_needed()
volume = model.load_inputs(features, kind)
patch = max(4, round(OCCLUSION_MM / 2))
occlusion_map(volume, lambda batch: model.predict_inputs({kind: batch}), brain, patch, patch)
times["occlusion"] = time.perf_counter() - tick

tick = time.perf_counter()
noise = load_bundle(resolve_bundle(unoise_spec), threads=2)
noise.predict_importance(features, brain)
times["unoise"] = time.perf_counter() - tick
times["total"] = time.perf_counter() - start
print(json.dumps(times))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("derivatives", type=Path)
    parser.add_argument("--local", default="default-local")
    parser.add_argument("--global", dest="global_", default="default")
    parser.add_argument("--unoise", default="default-unoise")
    parser.add_argument("--scans", type=int, default=3)
    opts = parser.parse_args()
    subjects = sorted(p.parent.name[4:] for p in opts.derivatives.glob("sub-*/anat"))
    print("| scan | local map + PAD + ROIs (s) | occlusion (s) | U-noise (s) | maps (s) | "
          "with imports (s) |")  # fmt:skip
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as cache:
        for subject in subjects[: opts.scans]:
            out = subprocess.run(
                [sys.executable, "-c", PROBE, opts.local, opts.global_, opts.unoise,
                 str(opts.derivatives), subject, cache],
                capture_output=True, text=True, check=True)  # fmt:skip
            t = json.loads(out.stdout.strip().splitlines()[-1])
            maps = t["local"] + t["occlusion"] + t["unoise"]
            print(
                f"| sub-{subject} | {t['local']:.2f} | {t['occlusion']:.2f} | "
                f"{t['unoise']:.2f} | {maps:.2f} | {t['total']:.2f} |"
            )


if __name__ == "__main__":
    main()
