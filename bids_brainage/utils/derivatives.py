"""The derivatives layout, written and read in one place.

File names come from the one path spec in ``data/io_spec.json``: ``write_derivative`` writes a
file (and its sidecar) under its name, and is the body of the Nipype sink
(``interfaces.bids.WriteScanDerivatives``); ``ScanDerivatives`` gives every per-scan path back
to the readers (group level, training, reports). Also dataset_description.json, .bidsignore and
the participant level's failure records.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .. import __version__
from .io import copy_atomic, write_json_atomic, write_text_atomic

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


SIDECAR_EXTENSIONS = (".nii.gz", ".nii", ".tsv", ".h5")
SCAN_ENTITIES = ("subject", "session", "acquisition", "run")


def write_derivative(
    base_directory: Path, entities: dict, *, in_file: Path | None = None,
    in_dict: dict | None = None, meta: dict | None = None,
) -> tuple[Path, Path | None]:  # fmt:skip
    """Write one derivative (a copy of ``in_file``, or ``in_dict`` as JSON) under the name its
    ``entities`` (suffix and extension included) give below ``base_directory``, atomically, with
    ``meta`` as its JSON sidecar. Returns the file and the sidecar (or None).
    """
    if (in_file is None) == (in_dict is None):
        raise ValueError("write_derivative needs exactly one of in_file and in_dict")
    out_file = Path(base_directory) / derivative_path(entities)
    if in_dict is not None:
        write_json_atomic(out_file, in_dict)
    else:
        copy_atomic(Path(in_file), out_file)
    if meta is None:
        return out_file, None
    ext = next((e for e in SIDECAR_EXTENSIONS if out_file.name.endswith(e)), None)
    if ext is None:
        raise ValueError(f"{out_file.name}: only images and tables take a JSON sidecar")
    sidecar = out_file.with_name(out_file.name[: -len(ext)] + ".json")
    write_json_atomic(sidecar, meta)
    return out_file, sidecar


@dataclass(frozen=True)
class ScanDerivatives:
    """Every participant-level file of one scan, by what it is (names from ``io_spec.json``).

    ``template`` and ``resolution`` are those of the scan's QC JSON; derivatives written before
    the QC recorded them have template-space maps found by their entities instead.
    """

    output_dir: Path
    entities: dict = field(hash=False)
    template: str | None = None
    resolution: str | None = None

    @classmethod
    def from_qc(cls, output_dir: Path, qc: dict) -> ScanDerivatives:
        """The scan a QC JSON (its ``scan`` and ``template`` entries) describes."""
        template = qc.get("template") or {}
        resolution = template.get("resolution")
        return cls(
            Path(output_dir),
            {k: qc["scan"].get(k) for k in SCAN_ENTITIES},
            template.get("name"),
            None if resolution is None else str(resolution),
        )

    @staticmethod
    def find_qc(output_dir: Path, subject: str | None = None) -> list[Path]:
        """The QC JSON of every processed scan (of one subject, if given)."""
        root = Path(output_dir) / f"sub-{subject}" if subject else Path(output_dir)
        return sorted(root.glob("**/anat/*_qc.json" if subject else "sub-*/**/anat/*_qc.json"))

    def file(self, suffix: str, extension: str, **entities) -> Path:
        ents = {k: v for k, v in self.entities.items() if v is not None}
        return self.output_dir / derivative_path({**ents, **entities, "suffix": suffix,
                                                  "extension": extension})  # fmt:skip

    def in_template(self, suffix: str, extension: str, **entities) -> Path:
        """A file on the template grid (space- and res- of the scan's template)."""
        if self.template is None:  # older derivatives: the one such file, whatever its space
            pattern = self.file(suffix, extension, space="SPACE", **entities).name
            before, after = pattern.split("_space-SPACE")
            found = sorted(self.anat.glob(f"{before}_space-*{after}"))
            return found[0] if found else self.anat / pattern
        return self.file(suffix, extension, space=self.template, resolution=self.resolution,
                         **entities)  # fmt:skip

    @property
    def anat(self) -> Path:
        return self.qc.parent

    @property
    def stem(self) -> str:
        """``sub-X[_ses-Y][_acq-Z][_run-N]``: what every file name of the scan starts with."""
        return self.qc.name.removesuffix("_qc.json")

    def figure(self, desc: str, suffix: str = "T1w", space: str | None = None,
               extension: str = ".png") -> Path:  # fmt:skip
        """A report figure of the scan (``sub-X/figures/<stem>[_space-]_desc-_<suffix>.png``)."""
        return self.file(suffix, extension, datatype="figures", desc=desc, space=space)

    @property
    def qc(self) -> Path:
        return self.file("qc", ".json")

    @property
    def brainage(self) -> Path:
        return self.file("brainage", ".tsv")

    @property
    def roi_table(self) -> Path:
        return self.file("brainage", ".tsv", desc="roi")

    @property
    def histogram(self) -> Path:
        return self.file("features", ".tsv", desc="histogram")

    def native(self, suffix: str, **entities) -> Path:
        """A native-space image: ``native("T1w", desc="preproc")``, ``native("probseg",
        label="GM")``.
        """
        return self.file(suffix, ".nii.gz", **entities)

    def tissue_map(self, label: str) -> Path:
        """The Jacobian-modulated tissue map on the template grid (a model input)."""
        return self.in_template("probseg", ".nii.gz", label=label, desc="modulated")

    def template_t1w(self, desc: str) -> Path:
        return self.in_template("T1w", ".nii.gz", desc=desc)

    def model_inputs(self) -> dict:
        """What a model reads (``models.inputs.ScanFeatures`` fields): the v2 histogram, the
        GM and WM modulated maps (CSF too: their sum is TIV) and the v2 brain on the template grid.
        """
        return {"histogram": self.histogram,
                "tissue": {label: self.tissue_map(label) for label in ("GM", "WM", "CSF")},
                "t1w": self.template_t1w("normv2")}  # fmt:skip

    def brainage_map(self, desc: str) -> Path:
        """A template-space map of the prediction workflow (local, localpad, occlusion,
        unoise).
        """
        return self.in_template("brainage", ".nii.gz", desc=desc)


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


def record_outcomes(output_dir: Path, runnable: list[str], failures: list[tuple]) -> None:
    """A record per failed scan (key, reason, crash file) for the group level; a scan that now
    succeeded loses its own.
    """
    failed = {key for key, _, _ in failures}
    for key, reason, crash_file in failures:
        if key.startswith("sub-"):  # "unknown scan": a crash no scan could be found for
            write_failure_record(output_dir, key, reason, crash_file)
    for key in runnable:
        if key not in failed:
            clear_failure_record(output_dir, key)
