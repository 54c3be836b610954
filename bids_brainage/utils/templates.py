"""Templates the pipeline uses, and their download at container build time.

At run time templates come from TEMPLATEFLOW_HOME (baked into the container, as fMRIPrep does);
this module's ``prefetch`` is what the Dockerfile and Singularity.def run while they still have a
network.
"""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_TEMPLATE = "MNI152NLin2009cAsym"
PREFETCH_RESOLUTIONS = (1, 2)


def prefetch_queries(template: str = DEFAULT_TEMPLATE) -> list[dict]:
    """TemplateFlow queries for everything preprocessing needs: head T1w, brain mask, tissues."""
    queries = []
    for resolution in PREFETCH_RESOLUTIONS:
        queries += [
            {"resolution": resolution, "desc": None, "suffix": "T1w"},
            {"resolution": resolution, "desc": "brain", "suffix": "mask"},
        ]
        queries += [
            {"resolution": resolution, "label": label, "suffix": "probseg"}
            for label in ("CSF", "GM", "WM")
        ]
    return [{"template": template, "extension": ".nii.gz", **q} for q in queries]


def prefetch(template: str = DEFAULT_TEMPLATE) -> list[Path]:
    """Download the template files into TEMPLATEFLOW_HOME (needs a network)."""
    from templateflow import api

    files = []
    for query in prefetch_queries(template):
        found = api.get(raise_empty=True, **query)
        files += found if isinstance(found, list) else [found]
    return [Path(f) for f in files]


if __name__ == "__main__":  # pragma: no cover - run by the container recipes
    for path in prefetch(*sys.argv[1:2]):
        print(path)
