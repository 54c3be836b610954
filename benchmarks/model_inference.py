"""Time to predict one scan's brain age with each bundle, in a fresh process (2 threads).

    python benchmarks/model_inference.py DERIVATIVES [BUNDLE ...]

DERIVATIVES holds participant-level outputs (e.g. of the IXI run of
``scripts/train_default_bundle.py``); BUNDLE defaults to the packaged ``default`` and every
bundle under DERIVATIVES/models. Each bundle is timed in its own interpreter: import, load
(checksums, contract), read the scan's features and predict — what the participant level's
prediction node does. Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import json, sys, time
start = time.perf_counter()
import torch
torch.set_num_threads(2)
from bids_brainage.models.bundle import load_bundle, resolve_bundle
from bids_brainage.models.inputs import ScanFeatures
from bids_brainage.models.predict import predict_table
bundle_spec, derivatives, subject = sys.argv[1:4]
imported = time.perf_counter()
bundle = load_bundle(resolve_bundle(bundle_spec), threads=2)
loaded = time.perf_counter()
contract = bundle.card["contract"]
features = ScanFeatures.from_derivatives(derivatives, {"subject": subject},
                                         contract["template"], contract["resolution"])
table = predict_table([bundle], features, None)
done = time.perf_counter()
print(json.dumps({"kind": bundle.kind, "import_s": imported - start, "load_s": loaded - imported,
                  "predict_s": done - loaded, "total_s": done - start,
                  "age": float(table["predicted_age"][0])}))
"""


def main() -> None:
    derivatives = Path(sys.argv[1])
    bundles = sys.argv[2:] or ["default", *map(str, sorted((derivatives / "models").glob("*")))]
    subject = sorted(derivatives.glob("sub-*/anat"))[0].parent.name[4:]
    print("| bundle | kind | import (s) | load (s) | predict (s) | total (s) |")
    print("|---|---|---|---|---|---|")
    for spec in bundles:
        out = subprocess.run([sys.executable, "-c", PROBE, spec, str(derivatives), subject],
                             capture_output=True, text=True, check=True)  # fmt:skip
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {Path(spec).name} | {r['kind']} | {r['import_s']:.2f} | {r['load_s']:.2f} | "
            f"{r['predict_s']:.2f} | {r['total_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
