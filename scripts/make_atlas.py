"""Write the Harvard-Oxford labels on the offline fallback template into the package.

    .venv/bin/python scripts/make_atlas.py [RESOLUTION ...]   (default: 2)

Runs the same registration as a run on any other template would (``utils.atlas``), once, so
the default participant level reads the result instead of spending a minute on it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from bids_brainage.config import Seeds
from bids_brainage.utils import atlas
from bids_brainage.utils.templates import resolve_template

TARGET = Path(__file__).resolve().parents[1] / "bids_brainage" / "data" / "atlases"


def main(resolutions: list[int]) -> None:
    Seeds().apply()
    TARGET.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        for resolution in resolutions:
            template = resolve_template(Path(work), resolution)
            # a non-fallback source forces the registration instead of reading the package
            fresh = atlas.Template(**{**template.__dict__, "source": "make_atlas"})
            path, names = atlas.harvard_oxford(fresh, Path(work))
            shutil.copy(path, TARGET / path.name)
            print(f"{TARGET / path.name}: {len(names)} regions")


if __name__ == "__main__":
    main([int(r) for r in sys.argv[1:]] or [2])
