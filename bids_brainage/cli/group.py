"""Group level: read the participant-level derivatives in OUTPUT_DIR (never recompute them)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pandas as pd

from .. import __version__
from ..config import Config
from ..models.bundle import BundleError
from ..models.inputs import ContractError
from ..reports.group import write_group_report
from ..utils.bids import InputError, read_participants, scan_key, strip_prefix
from ..utils.derivatives import read_failure_records, write_derivatives_root
from ..utils.io import staged_tree
from .parser import EXIT_FAILED, EXIT_INVALID_BIDS, EXIT_NO_MATCH, EXIT_OK, EXIT_USAGE
from .statistics import (
    BIAS_COLUMNS,
    RELIABILITY_COLUMNS,
    ROC_COLUMNS,
    ROI_SUMMARY_COLUMNS,
    SITE_COLUMNS,
    STATS_COLUMNS,
    StatisticsError,
    analyse,
    describe_results,
    model_columns,
    read_external_reference,
    staging_dir,
    write_maps,
    write_staged,
    write_stats_table,
)

LOGGER = logging.getLogger("bids_brainage")
GROUP_OUTPUTS = ("group", "group.html")  # replaced together by every group run

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


def read_dataset_description(bids_dir: Path) -> dict:
    try:
        return json.loads((Path(bids_dir) / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return {"Name": Path(bids_dir).name}


def find_scan_qc(output_dir: Path) -> list[Path]:
    """Every scan's QC JSON written by the participant level."""
    return sorted(output_dir.glob("sub-*/**/anat/*_qc.json"))


def collect_scan_table(config: Config) -> tuple[pd.DataFrame, list[str]]:
    """One row per processed scan, demographics joined from participants.tsv."""
    execution = config.execution
    demographics, table_errors = read_participants(execution.bids_dir)
    wanted_subjects = {strip_prefix(s, "sub") for s in execution.participant_label or []}
    wanted_sessions = {strip_prefix(s, "ses") for s in execution.session_label or []}
    rows, problems = [], []
    for qc_file in find_scan_qc(execution.output_dir):
        try:
            qc = json.loads(qc_file.read_text())
            scan = qc["scan"]
            subject, session = scan["subject"], scan.get("session")
        except (OSError, ValueError, KeyError, TypeError) as err:
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
            "qc_file": str(qc_file),
            # for the models, not written to the table
            "entities": {k: scan.get(k) for k in ("subject", "session", "acquisition", "run")},
            "template": qc.get("template", {}).get("name"),
            "resolution": qc.get("template", {}).get("resolution"),
            "version": qc.get("bids_brainage_version"),
            # runs before --brain-extraction existed all used the template method
            "brain_extraction": qc.get("brain_extraction", {}).get("method", "template"),
        })  # fmt:skip
    hidden = ["qc_file", "entities", "template", "resolution", "version", "brain_extraction"]
    table = pd.DataFrame(rows, columns=[*SCAN_COLUMNS, *hidden])
    return table, problems


def write_table(table: pd.DataFrame, config: Config, root: Path, suffix: str,
                columns: dict) -> Path:  # fmt:skip
    """Write a group TSV and its column sidecar through the one derivatives writer."""
    tsv = staging_dir(config) / f"{suffix}.tsv"
    table = table[[c for c in table.columns if c in columns]]
    table.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    return write_staged(root, tsv, suffix, {k: v for k, v in columns.items()
                                            if k in table.columns})  # fmt:skip


def check_statistics_options(config: Config, table: pd.DataFrame) -> None:
    """Options that can only be checked against the data: fail before any work."""
    query = config.statistics.bias_reference_query
    if query:
        try:
            table.query(query)
        except Exception as err:  # pandas raises many kinds on a bad query
            raise StatisticsError(f"--bias-reference-query {query!r}: {err}") from None
    if config.statistics.bias_reference not in ("auto", "controls", "bundle", "all"):
        read_external_reference(Path(config.statistics.bias_reference))


def write_statistics(config: Config, root: Path, results) -> list[Path]:
    """The group statistics tables and maps, each with its sidecar."""
    written = []
    analyses = list(results.models.values())
    if analyses:
        tables = {
            "bias": (pd.DataFrame([a.bias_summary for a in analyses]), BIAS_COLUMNS),
            "groups": (pd.concat([a.comparisons for a in analyses]), STATS_COLUMNS),
            "roc": (pd.concat([a.roc for a in analyses]), ROC_COLUMNS),
            "reliability": (pd.concat([a.reliability for a in analyses]), RELIABILITY_COLUMNS),
            "sitecalibration": (pd.concat([a.sites for a in analyses]), SITE_COLUMNS),
        }
        for desc, (table, columns) in tables.items():
            if not table.empty and set(table.columns) != {"model"}:
                written.append(write_stats_table(config, root, table, desc, columns))
    if results.roi_summary is not None:
        written.append(write_stats_table(config, root, results.roi_summary, "roisummary",
                                         ROI_SUMMARY_COLUMNS))  # fmt:skip
    if results.roi is not None and not results.roi.empty:
        written.append(write_stats_table(config, root, results.roi, "roi", STATS_COLUMNS))
    if results.voxelwise is not None:
        written += write_maps(config, root, results.voxelwise)
    for method, maps in results.importance.items():
        written += write_maps(config, root, maps, f"{method} maps of the participant level "
                              f"(*_desc-{method}_brainage)")  # fmt:skip
    return written


def participant_level_gaps(config: Config, table: pd.DataFrame) -> list[str]:
    """Scans whose latest participant run failed, and participants with no derivatives."""
    execution = config.execution
    lines = []
    processed = {scan_key(entities) for entities in table["entities"]}
    records = read_failure_records(execution.output_dir)
    for key, record in records.items():
        crash = f" [{Path(record['crash_file']).name}]" if record.get("crash_file") else ""
        if key in processed:
            lines.append(f"{key}: its latest participant-level run failed ({record['reason']})"
                         f"{crash}; its derivatives are from an earlier run")  # fmt:skip
        else:
            lines.append(f"{key}: failed at the participant level ({record['reason']}){crash}; "
                         "not in the statistics")  # fmt:skip
    demographics, _ = read_participants(execution.bids_dir)
    wanted = {strip_prefix(s, "sub") for s in execution.participant_label or []}
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


def run_group(config: Config) -> int:
    from .train import TrainingError, run_training

    execution = config.execution
    stages = 4 if config.models.train_model else 3

    def stage(k: int, text: str) -> None:
        if not execution.quiet:
            print(f"bids_brainage group: [{k}/{stages}] {text}", flush=True)

    try:
        if not find_scan_qc(execution.output_dir):
            print(
                f"bids_brainage: no participant-level derivatives in {execution.output_dir}; "
                "run the participant level first",
                file=sys.stderr,
            )
            return EXIT_NO_MATCH
        stage(1, f"collecting the participant-level derivatives in {execution.output_dir}")
        try:
            table, problems = collect_scan_table(config)
        except InputError as err:
            print(f"bids_brainage: {err}", file=sys.stderr)
            return EXIT_INVALID_BIDS
        if table.empty:
            print("bids_brainage: no processed scan matches the selection", file=sys.stderr)
            return EXIT_NO_MATCH
        for problem in problems:
            LOGGER.warning(problem)
        try:
            check_statistics_options(config, table)
        except StatisticsError as err:
            print(f"bids_brainage: {err}", file=sys.stderr)
            return EXIT_USAGE
        stage(2, f"statistics over {len(table)} scan(s) (bias correction, group tests, ROC, "
                 "ICC, voxel-wise maps)")
        results = analyse(config, table)
        results.skipped = version_notes(table) + results.skipped
        results.gaps = participant_level_gaps(config, table)
        for line in results.problems + results.gaps:
            LOGGER.warning(line)
        columns = dict(SCAN_COLUMNS)
        for model in results.model_names:
            columns.update(model_columns(model))
        stage(3, "writing the group tables, maps and report")
        with staged_tree(execution.output_dir, GROUP_OUTPUTS, "group") as root:
            written = [write_table(results.scans, config, root, "scans", columns)]
            written += write_statistics(config, root, results)
            write_group_report(results, config, written, root)
        written = [execution.output_dir / path.relative_to(root) for path in written]
        n_age = int(table["age"].notna().sum())
        n_excluded = int(results.scans["excluded"].notna().sum())
        print(
            f"bids_brainage group: {len(table)} scan(s) of {table['participant_id'].nunique()} "
            f"participant(s), {n_age} with an age, {n_excluded} excluded from the statistics; "
            f"table written to {written[0]}"
        )
        for line in describe_results(results):
            print(f"bids_brainage group: {line}")
        for line in results.skipped:
            print(f"bids_brainage group: skipped: {line}")
        print(f"bids_brainage group: report {execution.output_dir / 'group.html'}")
        if config.models.train_model:
            stage(4, f"training {config.models.train_model} ({config.models.model_kind})")
            try:
                bundle = run_training(config, table, read_dataset_description(execution.bids_dir))
            except (TrainingError, BundleError, ContractError) as err:
                print(f"bids_brainage: training {config.models.train_model}: {err}",
                      file=sys.stderr)  # fmt:skip
                return EXIT_FAILED
            print_training_summary(bundle)
    finally:
        write_derivatives_root(execution.output_dir, execution.bids_dir)
    return EXIT_FAILED if problems else EXIT_OK


def print_training_summary(bundle: Path) -> None:
    card = json.loads((bundle / "model.json").read_text())
    if "validation" in card:  # an importance model: no age of its own
        check = card["validation"]
        print(f"bids_brainage group: {card['name']} ({card['kind']}) explains "
              f"{card['explains']['name']}: held-out MAE {check['clean_mae']:.2f} clean, "
              f"{check['noisy_mae']:.2f} with the learnt noise (mean mask "
              f"{check['mean_mask_in_brain']:.2f})")  # fmt:skip
    for split, result in card.get("cross_validation", {}).items():
        mae = result["metrics"]["mae"]
        print(
            f"bids_brainage group: {card['name']} ({card['kind']}) {split}-split CV MAE "
            f"{mae['mean']:.2f} ± {mae['sd']:.2f} years "
            f"(median-age baseline {result['metrics']['baseline_mae']['mean']:.2f})"
        )
    print(f"bids_brainage group: bundle and model card written to {bundle}")
