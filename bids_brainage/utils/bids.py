"""BIDS input: validation, T1w collection with pybids, participants' demographics and site."""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

LOGGER = logging.getLogger("bids_brainage")

SITE_SIDECAR_KEYS = ("InstitutionName", "Manufacturer", "ManufacturersModelName")
MAX_PLAUSIBLE_AGE = 130.0
NA_VALUES = {"", "n/a", "na", "nan", "none", "null"}


class InputError(ValueError):
    """A problem with the user's input, reported as one line naming the file."""


@dataclass
class Demographics:
    """What participants.tsv says of one participant (None where unknown)."""

    age: float | None = None
    sex: str | None = None
    group: str | None = None
    site: str | None = None


@dataclass
class T1wScan:
    """One T1-weighted image to process, with everything known about its participant."""

    subject: str
    path: Path
    session: str | None = None
    run: str | None = None
    acquisition: str | None = None
    age: float | None = None
    sex: str | None = None
    group: str | None = None
    site: str = "unknown"
    site_source: str = "none"
    error: str | None = None

    @property
    def key(self) -> str:
        """A name for this scan, unique in the dataset: ``sub-01_ses-1_run-2``."""
        return scan_key(self.entities)

    @property
    def entities(self) -> dict:
        ents = {"subject": self.subject}
        for name in ("session", "acquisition", "run"):
            if getattr(self, name) is not None:
                ents[name] = getattr(self, name)
        return ents

    def to_dict(self) -> dict:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


def scan_key(entities: dict) -> str:
    """``sub-01_ses-1_run-2`` from subject, session, acquisition and run labels (None: absent)."""
    parts = [f"sub-{entities['subject']}"]
    for prefix, name in (("ses", "session"), ("acq", "acquisition"), ("run", "run")):
        if entities.get(name) is not None:
            parts.append(f"{prefix}-{entities[name]}")
    return "_".join(parts)


def strip_prefix(label: str, prefix: str) -> str:
    """``sub-01`` and ``01`` both give ``01``."""
    return label[len(prefix) + 1 :] if label.startswith(f"{prefix}-") else label


# --- validation -------------------------------------------------------------------------------


def validator_command() -> list[str] | None:
    """The official validator's command, from the ``bids-validator-deno`` package."""
    exe = shutil.which("bids-validator-deno")
    if exe is None:
        candidate = Path(sys.executable).parent / "bids-validator-deno"  # venv not on PATH
        exe = str(candidate) if candidate.exists() else None
    return [exe] if exe else None


def run_bids_validator(path: Path, timeout: float = 600) -> list[dict]:
    """Run the official BIDS validator; return its issues of severity ``error``."""
    command = validator_command()
    if command is None:
        raise RuntimeError(
            "bids-validator-deno is not installed; install it or pass --skip-bids-validation"
        )
    proc = subprocess.run(
        [*command, str(path), "--format", "json", "--ignoreWarnings"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError as err:
        raise RuntimeError(
            f"the BIDS validator gave no readable report for {path}: "
            f"{(proc.stderr or proc.stdout).strip()[:500]}"
        ) from err
    issues = report.get("issues", {}).get("issues", [])
    return [issue for issue in issues if issue.get("severity") == "error"]


def format_validator_issue(issue: dict) -> str:
    where = issue.get("location", "")
    sub = f" ({issue['subCode']})" if issue.get("subCode") else ""
    message = (issue.get("issueMessage") or "").strip().splitlines()
    detail = f": {message[0]}" if message else ""
    return f"{issue.get('code', 'ERROR')}{sub} at {where}{detail}"


# --- participants.tsv -------------------------------------------------------------------------


def _is_na(value) -> bool:
    return value is None or str(value).strip().lower() in NA_VALUES


def parse_age(value, participant: str, source: Path) -> float | None:
    """Age in years; ``n/a`` gives None; anything else not a plausible age is an InputError."""
    if _is_na(value):
        return None
    text = str(value).strip()
    try:
        age = float(text)
    except ValueError:
        raise InputError(
            f"{source}: {participant} has age {text!r}, which is not a number of years"
        ) from None
    if not math.isfinite(age) or age < 0 or age > MAX_PLAUSIBLE_AGE:
        raise InputError(
            f"{source}: {participant} has age {text!r}, outside 0-{MAX_PLAUSIBLE_AGE:g} years"
        )
    return age


def read_participants(bids_dir: Path) -> tuple[dict[str, Demographics], dict[str, str]]:
    """Read participants.tsv.

    Returns the demographics of every participant it describes correctly and, separately,
    a one-line error for every participant it describes wrongly (bad age, duplicated row),
    so that those participants fail alone.
    """
    path = bids_dir / "participants.tsv"
    if not path.exists():
        LOGGER.warning("%s not found: ages, sex, group and site are unknown", path)
        return {}, {}
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise InputError(f"{path}: cannot be read as a tab-separated table ({err})") from err
    if "participant_id" not in table.columns:
        raise InputError(f"{path}: has no participant_id column")
    columns = {c.lower(): c for c in table.columns}

    demographics: dict[str, Demographics] = {}
    errors: dict[str, str] = {}
    counts = table["participant_id"].str.strip().value_counts()
    for _, row in table.iterrows():
        pid = row["participant_id"].strip()
        label = strip_prefix(pid, "sub")
        if counts[pid] > 1:
            errors[label] = f"{path}: {pid} appears {counts[pid]} times"
            continue
        try:
            age = parse_age(row[columns["age"]], pid, path) if "age" in columns else None
        except InputError as err:  # the rest of the row still counts (group, sex, site)
            errors[label] = str(err)
            age = None

        def text(name, row=row):
            value = row[columns[name]] if name in columns else None
            return None if _is_na(value) else str(value).strip()

        demographics[label] = Demographics(
            age=age, sex=text("sex"), group=text("group"), site=text("site")
        )
    return demographics, errors


# --- sidecars and site --------------------------------------------------------------------------


def read_sidecar(bids_dir: Path, image: Path) -> tuple[dict, list[str]]:
    """Merge the JSON sidecars that apply to ``image`` by BIDS inheritance.

    Returns the metadata and warnings for sidecars that could not be read (a broken
    sidecar loses its metadata; it does not stop the scan).
    """
    from bids.layout import parse_file_entities

    image_entities = parse_file_entities(str(image))
    suffix = image_entities.get("suffix")
    relative = image.relative_to(bids_dir)
    folders = [bids_dir] + [
        bids_dir.joinpath(*relative.parts[: i + 1]) for i in range(len(relative.parts) - 1)
    ]
    metadata: dict = {}
    warnings: list[str] = []
    for folder in folders:
        for candidate in sorted(folder.glob(f"*{suffix}.json")):
            entities = parse_file_entities(str(candidate))
            entities.pop("extension", None)
            if any(image_entities.get(k) != v for k, v in entities.items()):
                continue
            try:
                content = json.loads(candidate.read_text())
                if not isinstance(content, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, UnicodeDecodeError) as err:
                warnings.append(f"{candidate}: sidecar is not valid JSON ({err}); ignored")
                continue
            metadata.update(content)
    return metadata, warnings


def _read_table(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError):
        LOGGER.warning("%s: cannot be read as a tab-separated table; ignored", path)
        return None


def site_from_tables(bids_dir: Path, scan: T1wScan) -> str | None:
    """Site from sessions.tsv (by session) or scans.tsv (by file), if either has a site column."""
    subject_dir = bids_dir / f"sub-{scan.subject}"
    sessions = _read_table(subject_dir / f"sub-{scan.subject}_sessions.tsv")
    if scan.session and sessions is not None and "site" in sessions.columns:
        match = sessions[
            sessions["session_id"].map(lambda s: strip_prefix(s, "ses")) == scan.session
        ]
        if len(match) and not _is_na(match["site"].iloc[0]):
            return match["site"].iloc[0].strip()
    scans_dir = subject_dir / (f"ses-{scan.session}" if scan.session else "")
    prefix = f"sub-{scan.subject}" + (f"_ses-{scan.session}" if scan.session else "")
    scans = _read_table(scans_dir / f"{prefix}_scans.tsv")
    if scans is not None and "site" in scans.columns and "filename" in scans.columns:
        relative = scan.path.relative_to(scans_dir).as_posix()
        match = scans[scans["filename"] == relative]
        if len(match) and not _is_na(match["site"].iloc[0]):
            return match["site"].iloc[0].strip()
    return None


def site_from_sidecar(metadata: dict) -> str | None:
    """A site name built from scanner metadata: institution, else make/model/field strength."""
    if not _is_na(metadata.get("InstitutionName")):
        return str(metadata["InstitutionName"]).strip()
    parts = [
        str(metadata[k]).strip() for k in SITE_SIDECAR_KEYS[1:] if not _is_na(metadata.get(k))
    ]
    field = metadata.get("MagneticFieldStrength")
    if not _is_na(field):
        parts.append(f"{field}T")
    return " ".join(parts) or None


# --- collection -------------------------------------------------------------------------------


def load_filters(path: Path | None) -> dict:
    """Read an fMRIPrep-style BIDS filter file: ``{"t1w": {"session": "1", ...}}``."""
    if path is None:
        return {}
    try:
        filters = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read the BIDS filter file ({err})") from err
    if not isinstance(filters, dict) or not all(isinstance(v, dict) for v in filters.values()):
        raise InputError(
            f'{path}: a filter file maps query names to objects, e.g. {{"t1w": {{}}}}'
        )
    unknown = set(filters) - {"t1w"}
    if unknown:
        raise InputError(f"{path}: unknown query name(s) {sorted(unknown)}; only 't1w' is used")
    return filters


def collect_t1w(
    bids_dir: Path,
    participant_label: list[str] | None = None,
    session_label: list[str] | None = None,
    bids_filters: dict | None = None,
) -> list[T1wScan]:
    """Every T1w image selected by the labels and filters, with demographics and site."""
    from bids import BIDSLayout, BIDSLayoutIndexer

    # Metadata is read by read_sidecar, so that one broken sidecar cannot stop indexing.
    layout = BIDSLayout(
        str(bids_dir), validate=False, indexer=BIDSLayoutIndexer(index_metadata=False)
    )
    from .derivatives import io_spec

    query = dict(io_spec()["queries"]["t1w"])
    query.update((bids_filters or {}).get("t1w", {}))
    if participant_label:
        query["subject"] = [strip_prefix(label, "sub") for label in participant_label]
    if session_label:
        query["session"] = [strip_prefix(label, "ses") for label in session_label]
    files = layout.get(return_type="object", **query)

    demographics, table_errors = read_participants(bids_dir)
    scans = []
    for bids_file in sorted(files, key=lambda f: f.path):
        ents = bids_file.get_entities()
        scan = T1wScan(
            subject=str(ents["subject"]),
            path=Path(bids_file.path),
            session=str(ents["session"]) if "session" in ents else None,
            run=str(ents["run"]) if "run" in ents else None,
            acquisition=str(ents["acquisition"]) if "acquisition" in ents else None,
        )
        scan.error = table_errors.get(scan.subject)
        info = demographics.get(scan.subject, Demographics())
        scan.age, scan.sex, scan.group = info.age, info.sex, info.group
        metadata, warnings = read_sidecar(bids_dir, scan.path)
        for warning in warnings:
            LOGGER.warning(warning)
        for source, site in (
            ("participants.tsv", info.site),
            ("sessions.tsv/scans.tsv", site_from_tables(bids_dir, scan)),
            ("sidecar", site_from_sidecar(metadata)),
        ):
            if site:
                scan.site, scan.site_source = site, source
                break
        scans.append(scan)
    return scans


def copy_participants(source: Path, target: Path, labels: list[str]) -> Path:
    """A BIDS dataset at ``target`` holding only ``labels`` (no ``sub-``) of ``source``: their
    folders, their participants.tsv rows and the dataset description.
    """
    import shutil

    import pandas as pd

    source, target = Path(source), Path(target)
    target.mkdir(parents=True)
    shutil.copy(source / "dataset_description.json", target)
    table = pd.read_csv(source / "participants.tsv", sep="\t", dtype=str, keep_default_na=False)
    table[table["participant_id"].isin([f"sub-{s}" for s in labels])].to_csv(
        target / "participants.tsv", sep="\t", index=False)  # fmt:skip
    for label in labels:
        shutil.copytree(source / f"sub-{label}", target / f"sub-{label}")
    return target
