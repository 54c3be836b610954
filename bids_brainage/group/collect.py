"""Participant-level derivatives in OUTPUT_DIR → one table of scans, every path resolved once.

Each row carries its ``ScanDerivatives`` (column ``derivatives``), from which every reader
takes the scan's files; nothing here or downstream builds a file name by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .. import __version__
from ..preprocessing.qc import UNTRUSTWORTHY_FLAGS, gm_wm_peak_ratio, preprocessing_choices
from ..utils.bids import read_participants, scan_key, strip_prefix
from ..utils.derivatives import ScanDerivatives, read_failure_records

SCAN_COLUMNS = {
    "participant_id": {"Description": "Participant label, with the sub- prefix"},
    "session_id": {"Description": "Session label, with the ses- prefix (n/a if none)"},
    "acquisition": {"Description": "acq- entity of the T1w image (n/a if none)"},
    "run": {"Description": "run- entity of the T1w image (n/a if none)"},
    "site": {"Description": "Acquisition site used to group scans"},
    "site_source": {
        "Description": "Where the site came from",
        "Levels": {
            "participants.tsv": "site column of participants.tsv",
            "sessions.tsv/scans.tsv": "site column of sessions.tsv or scans.tsv",
            "sidecar": "InstitutionName, or Manufacturer/model/field strength of the T1w sidecar",
            "none": "no source; site is 'unknown'",
        },
    },
    "age": {"Description": "Chronological age from participants.tsv", "Units": "year"},
    "sex": {"Description": "Sex from participants.tsv"},
    "group": {"Description": "Group from participants.tsv (e.g. HC for healthy controls)"},
    "qc_flags": {"Description": "Comma-separated QC flags raised during preprocessing"},
    "source": {"Description": "The raw T1w image, relative to BIDS_DIR"},
    "excluded": {"Description": "Why the scan is left out of the statistics (n/a: included)"},
}
# carried for the statistics and training, never written to the table
HIDDEN_COLUMNS = (
    "derivatives",
    "version",
    "brain_extraction",
    "field_of_view",
    "intensity_scale",
    "stripped_n4_grid",
    "denoising",
    "contrast_standardisation",
    "bias_correction",
    "gm_wm_peak_ratio",
    "cnr_gm_wm",
)


def read_dataset_description(bids_dir: Path) -> dict:
    try:
        return json.loads((Path(bids_dir) / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return {"Name": Path(bids_dir).name}


def has_derivatives(output_dir: Path) -> bool:
    return bool(ScanDerivatives.find_qc(output_dir))


def collect_scan_table(bids_dir: Path, output_dir: Path, participant_label=None,
                       session_label=None) -> tuple[pd.DataFrame, list[str]]:  # fmt:skip
    """One row per processed scan, demographics joined from participants.tsv; and the problems
    met (unreadable QC files, bad participants.tsv rows), one line each.
    """
    demographics, table_errors = read_participants(bids_dir)
    wanted_subjects = {strip_prefix(s, "sub") for s in participant_label or []}
    wanted_sessions = {strip_prefix(s, "ses") for s in session_label or []}
    rows, problems = [], []
    for qc_file in ScanDerivatives.find_qc(output_dir):
        try:
            qc = json.loads(qc_file.read_text())
            derivatives = ScanDerivatives.from_qc(output_dir, qc)
            scan = qc["scan"]
            subject, session = scan["subject"], scan.get("session")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            problems.append(f"{qc_file}: not a bids_brainage QC file ({type(err).__name__}: "
                            f"{err}); skipped")  # fmt:skip
            continue
        if wanted_subjects and subject not in wanted_subjects:
            continue
        if wanted_sessions and session not in wanted_sessions:
            continue
        if subject in table_errors and table_errors[subject] not in problems:
            problems.append(table_errors[subject])
        info = demographics.get(subject)
        rows.append({
            "participant_id": f"sub-{subject}",
            "session_id": f"ses-{session}" if session else None,
            "acquisition": scan.get("acquisition"),
            "run": scan.get("run"),
            "site": scan.get("site", "unknown"),
            "site_source": scan.get("site_source", "none"),
            "age": info.age if info else None,
            "sex": info.sex if info else None,
            "group": info.group if info else None,
            "qc_flags": ",".join(qc.get("flags", [])),
            "source": scan.get("source"),
            "derivatives": derivatives,
            "version": qc.get("bids_brainage_version"),
            **preprocessing_choices(qc),
            "gm_wm_peak_ratio": gm_wm_peak_ratio(qc.get("measures", {})),
            "cnr_gm_wm": qc.get("measures", {}).get("cnr_gm_wm"),
        })  # fmt:skip
    return pd.DataFrame(rows, columns=[*SCAN_COLUMNS, *HIDDEN_COLUMNS]), problems


def nuisance_copies_table(bids_dir: Path, output_dir: Path) -> pd.DataFrame:
    """The processed copies of a nuisance-copy dataset (``scripts/nuisance_copies.py``), each
    with the ``source_participant`` that participants.tsv names for it.
    """
    table, _ = collect_scan_table(bids_dir, output_dir)
    sources = pd.read_csv(Path(bids_dir) / "participants.tsv", sep="\t", dtype=str)
    if "source_participant" not in sources:
        raise ValueError(f"{bids_dir}/participants.tsv: no source_participant column")
    table["source_participant"] = table["participant_id"].map(
        sources.set_index("participant_id")["source_participant"])  # fmt:skip
    return table.dropna(subset=["source_participant"]).reset_index(drop=True)


def participant_level_gaps(bids_dir: Path, output_dir: Path, table: pd.DataFrame,
                           participant_label=None) -> list[str]:  # fmt:skip
    """Scans whose latest participant run failed, and participants with no derivatives."""
    lines = []
    processed = {scan_key(d.entities) for d in table["derivatives"]}
    records = read_failure_records(output_dir)
    for key, record in records.items():
        crash = f" [{Path(record['crash_file']).name}]" if record.get("crash_file") else ""
        if key in processed:
            lines.append(f"{key}: its latest participant-level run failed ({record['reason']})"
                         f"{crash}; its derivatives are from an earlier run")  # fmt:skip
        else:
            lines.append(f"{key}: failed at the participant level ({record['reason']}){crash}; "
                         "not in the statistics")  # fmt:skip
    demographics, _ = read_participants(bids_dir)
    wanted = {strip_prefix(s, "sub") for s in participant_label or []}
    accounted = set(table["participant_id"]) | {key.split("_")[0] for key in records}
    missing = sorted(f"sub-{s}" for s in demographics
                     if (not wanted or s in wanted) and f"sub-{s}" not in accounted)  # fmt:skip
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10
                                           else "")  # fmt:skip
        lines.append(f"{len(missing)} participant(s) of participants.tsv have no participant-"
                     f"level derivatives in OUTPUT_DIR (not run yet?): {shown}")  # fmt:skip
    return lines


def version_notes(table: pd.DataFrame) -> list[str]:
    """Scans whose participant-level derivatives another version of the app wrote."""
    other = table[table["version"].fillna("unknown") != __version__]
    if other.empty:
        return []
    counts = other["version"].fillna("an unknown (older) version").value_counts()
    return [f"{n} scan(s) have derivatives written by bids_brainage {version} (this is "
            f"{__version__}): read as far as their files allow; rerun the participant level "
            "for identical processing" for version, n in counts.items()]  # fmt:skip


def exclusion_reasons(table: pd.DataFrame, include_failed_qc: bool) -> pd.Series:
    """Why each scan is left out of the statistics (None: included)."""

    def reason(row) -> str | None:
        flags = set(filter(None, str(row["qc_flags"] or "").split(",")))
        failed = sorted(flags & UNTRUSTWORTHY_FLAGS)
        if failed and not include_failed_qc:
            return "QC: " + ", ".join(failed)
        if not row["derivatives"].brainage.is_file():
            return "no brain-age prediction (run the participant level with a --model)"
        return None

    return table.apply(reason, axis=1) if len(table) else pd.Series(dtype=object)


def read_brainage_table(path: Path) -> pd.DataFrame:
    """A scan's ``_brainage.tsv``; older tables without the interval columns are accepted."""
    found = pd.read_csv(path, sep="\t", na_values="n/a")
    missing = [c for c in ("model", "predicted_age") if c not in found.columns]
    if missing:
        raise KeyError(f"no {' or '.join(missing)} column")
    for column in ("interval_lower", "interval_upper"):
        if column not in found.columns:
            found[column] = math.nan
    found["predicted_age"] = pd.to_numeric(found["predicted_age"], errors="raise")
    return found[["model", "predicted_age", "interval_lower", "interval_upper"]]


def read_predictions(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Long table: scan index, model, predicted age and interval, from every _brainage.tsv.
    A scan whose table cannot be read is marked excluded in ``table``.
    """
    frames, problems = [], []
    for index, row in table[table["excluded"].isna()].iterrows():
        path = row["derivatives"].brainage
        try:
            found = read_brainage_table(path)
        except (OSError, ValueError, KeyError) as err:
            problems.append(f"{path}: unreadable brain-age table ({err}); scan excluded")
            table.loc[index, "excluded"] = "unreadable brain-age table"
            continue
        frames.append(found.assign(scan=index))
    if not frames:
        return pd.DataFrame(columns=["scan", "model", "predicted_age"]), problems
    return pd.concat(frames, ignore_index=True), problems


def read_roi_tables(scans: pd.DataFrame) -> pd.DataFrame | None:
    """Long table of every scan's ROI means (scan index, roi, mean_local_brainage)."""
    rows = []
    for index, row in scans.iterrows():
        path = row["derivatives"].roi_table
        if path.is_file():
            try:
                table = pd.read_csv(path, sep="\t", na_values="n/a")
                rows.append(table[["roi", "mean_local_brainage"]].assign(scan=index))
            except (OSError, ValueError, KeyError):
                continue  # its scan's local map is reported unreadable by the voxel-wise pass
    return pd.concat(rows, ignore_index=True) if rows else None


def scan_maps(scans: pd.DataFrame, desc: str) -> dict:
    """Each scan's template-space ``desc-<desc>_brainage`` map that exists, by row."""
    paths = {}
    for index, row in scans.iterrows():
        path = row["derivatives"].brainage_map(desc)
        if path.is_file():
            paths[index] = str(path)
    return paths


def first_readable(paths) -> tuple[str, nib.Nifti1Image, np.ndarray] | None:
    """The first map that loads: it gives the grid (the unreadable ones are reported later)."""
    for path in paths:
        try:
            image = nib.load(path)
            return path, image, np.asarray(image.dataobj, dtype=np.float32)
        except Exception:  # noqa: BLE001 - nibabel raises many kinds on corrupt files
            continue
    return None


def space_of(path: str) -> tuple[str, str | None]:
    """The space- and res- entities of a template-space derivative (pybids parses the name)."""
    from bids.layout import parse_file_entities

    entities = parse_file_entities(str(path), config=["bids", "derivatives"])
    return entities.get("space"), entities.get("res")


def dataset_shape_notes(table: pd.DataFrame, included: pd.DataFrame) -> list[str]:
    """What the shape of the dataset rules out, said once, before the per-model lines."""
    notes = []
    if included.empty:
        reasons = table["excluded"].value_counts()
        hint = (
            "; --include-failed-qc keeps scans that failed QC"
            if any(str(why).startswith("QC:") for why in reasons.index)
            else ""
        )
        notes.append(
            f"all {len(table)} scan(s) excluded ("
            + "; ".join(f"{why}: {n}" for why, n in reasons.items())
            + f"): no statistics{hint}"
        )
    elif included["age"].isna().all():
        notes.append(
            "no included scan has an age (participants.tsv has no usable age column):"
            " brain-PAD, bias correction, accuracy and group comparisons skipped"
        )
    elif included["age"].isna().any():
        n = int(included["age"].isna().sum())
        notes.append(f"{n} included scan(s) have no age: they count for the test-retest ICC "
                     "only")  # fmt:skip
    return notes
