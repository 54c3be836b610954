"""The derivatives tree: file names from one path spec, dataset_description.json, .bidsignore.

Writing files goes through ``interfaces.bids.DerivativesDataSink`` only; this module holds the
pure helpers it uses.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .. import __version__
from .io import write_json_atomic, write_text_atomic

BIDS_VERSION = "1.10.0"


@lru_cache(maxsize=1)
def io_spec() -> dict:
    return json.loads(resources.files("bids_brainage.data").joinpath("io_spec.json").read_text())


def derivative_path(entities: dict) -> str:
    """The relative path of a derivative, built from the one path pattern in ``io_spec.json``."""
    from bids.layout.writing import build_path

    ents = {k: v for k, v in entities.items() if v is not None}
    if "subject" in ents:
        ents.setdefault("datatype", "anat")
    path = build_path(ents, io_spec()["patterns"], strict=True)
    if path is None:
        raise ValueError(f"no derivative path pattern accepts the entities {ents}")
    return path


def container_info() -> dict | None:
    """The container the run is in, as BIDS GeneratedBy.Container wants it."""
    # Set by this project's Dockerfile and Singularity.def only: being in some other container
    # says nothing about which image ran.
    kind = os.environ.get("BIDS_BRAINAGE_CONTAINER")
    if not kind:
        return None
    return {"Type": kind, "Tag": f"bids_brainage:{__version__}"}


def dataset_description(bids_dir: Path) -> dict:
    generated_by = {
        "Name": "bids_brainage",
        "Version": __version__,
        "CodeURL": "https://github.com/bids-brainage/bids_brainage",
    }
    container = container_info()
    if container:
        generated_by["Container"] = container
    return {
        "Name": "bids_brainage derivatives",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated_by],
        "SourceDatasets": [{"URL": Path(bids_dir).resolve().as_uri()}],
        "HowToAcknowledge": "Cite bids_brainage (see logs/CITATION.md for the methods text).",
    }


def write_derivatives_root(output_dir: Path, bids_dir: Path) -> None:
    """dataset_description.json and .bidsignore; called in a ``finally`` so they always exist."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output_dir / "dataset_description.json", dataset_description(bids_dir))
    ignore = output_dir / ".bidsignore"
    existing = ignore.read_text().splitlines() if ignore.exists() else []
    lines = existing + [p for p in io_spec()["bidsignore"] if p not in existing]
    write_text_atomic(ignore, "\n".join(lines) + "\n")


# --- the participant level's record of failed scans (read back by the group level) ----------
FAILURES_FOLDER = Path("logs") / "failed"


def write_failure_record(output_dir: Path, key: str, reason: str, crash_file: Path | None) -> None:
    """One JSON per failed scan, so that the group level (maybe on another node) can list it."""
    from datetime import datetime

    record = {"scan": key, "reason": reason, "crash_file": str(crash_file) if crash_file else None,
              "time": datetime.now().isoformat(timespec="seconds"),
              "bids_brainage_version": __version__}  # fmt:skip
    write_json_atomic(Path(output_dir) / FAILURES_FOLDER / f"{key}.json", record)


def clear_failure_record(output_dir: Path, key: str) -> None:
    (Path(output_dir) / FAILURES_FOLDER / f"{key}.json").unlink(missing_ok=True)


def read_failure_records(output_dir: Path) -> dict[str, dict]:
    """The scans whose latest participant-level run failed, by scan key."""
    records = {}
    for path in sorted((Path(output_dir) / FAILURES_FOLDER).glob("sub-*.json")):
        try:
            record = json.loads(path.read_text())
            records[record["scan"]] = record
        except (OSError, ValueError, KeyError):
            records[path.stem] = {"scan": path.stem, "reason": f"{path}: unreadable record"}
    return records
