"""Entry point: ``bids_brainage BIDS_DIR OUTPUT_DIR {participant,group} [options]``."""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from pathlib import Path

from .. import __version__
from ..config import Config
from ..models.bundle import BundleError
from ..reports.subject import write_subject_reports
from ..utils.bids import (
    InputError,
    T1wScan,
    collect_t1w,
    format_validator_issue,
    run_bids_validator,
)
from ..utils.derivatives import ScanDerivatives, record_outcomes, write_derivatives_root
from ..utils.guards import OutputError, check_writable, describe_failure, stop_cleanly_on_signals
from .parser import (
    EXIT_FAILED,
    EXIT_INVALID_BIDS,
    EXIT_NO_MATCH,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    parse_args,
)
from .workflow import Failure, run_graph, write_crash_file

LOGGER = logging.getLogger("bids_brainage")


def setup_logging(verbosity: int, quiet: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s", "%H:%M:%S"))
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(logging.WARNING if quiet else logging.INFO if verbosity < 2 else logging.DEBUG)
    LOGGER.propagate = False
    # Nipype prints whole tracebacks at ERROR; the crash files keep them, the console gets one
    # line per failed scan unless -v is given.
    nipype_level = {0: logging.CRITICAL, 1: logging.WARNING, 2: logging.INFO}.get(
        verbosity, logging.DEBUG
    )
    from nipype import config as nipype_config
    from nipype import logging as nipype_logging

    name = logging.getLevelName(nipype_level)
    nipype_config.update_config(
        {"logging": {"workflow_level": name, "interface_level": name, "utils_level": name}}
    )
    nipype_logging.update_logging(nipype_config)


def main(argv: list[str] | None = None) -> int:
    """Run the BIDS-App; return the exit code (BIDS-Apps execution specification)."""
    try:
        config = parse_args(argv)
    except UsageError as err:
        print(str(err), file=sys.stderr)
        return err.code
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0)
    execution = config.execution
    if execution.list_participants:
        return list_participants(execution)
    try:
        check_writable(execution.output_dir, "OUTPUT_DIR")
        check_writable(execution.work_dir, "the work folder")
    except OutputError as err:
        print(str(err), file=sys.stderr)
        return err.code
    try:
        setup_logging(execution.verbosity, execution.quiet)
        stop_cleanly_on_signals(execution.output_dir, execution.bids_dir)
        config.seeds.apply()
        LOGGER.info("bids_brainage %s, %s level", __version__, execution.analysis_level)
        from .group import run_group

        level = run_participant if execution.analysis_level == "participant" else run_group
        return level(config)
    except Exception as exc:  # noqa: BLE001 - the console gets one line, the file the traceback
        line, code = describe_failure(exc, execution.log_dir, execution.analysis_level)
        print(line, file=sys.stderr)
        return code


def validate_input(config: Config) -> int | None:
    """Run the official validator; print its errors and return 16 if there are any."""
    if config.execution.skip_bids_validation:
        return None
    bids_dir = config.execution.bids_dir
    try:
        errors = run_bids_validator(bids_dir)
    except RuntimeError as err:
        print(f"bids_brainage: {err}", file=sys.stderr)
        return EXIT_INVALID_BIDS
    if not errors:
        return None
    print(f"bids_brainage: {bids_dir} is not valid BIDS ({len(errors)} errors):", file=sys.stderr)
    for issue in errors[:50]:
        print(f"  - {format_validator_issue(issue)}", file=sys.stderr)
    if len(errors) > 50:
        print(f"  ... and {len(errors) - 50} more", file=sys.stderr)
    print("Fix them, or pass --skip-bids-validation to go on at your own risk.", file=sys.stderr)
    return EXIT_INVALID_BIDS


def list_participants(execution) -> int:
    """``--list-participants``: the selected participants' labels, nothing written."""
    try:
        scans = collect_t1w(execution.bids_dir, execution.participant_label,
                            execution.session_label, execution.bids_filters)  # fmt:skip
    except InputError as err:
        print(f"bids_brainage: {err}", file=sys.stderr)
        return EXIT_INVALID_BIDS
    labels = sorted({scan.subject for scan in scans})
    if not labels:
        print(f"bids_brainage: no T1w image in {execution.bids_dir} matches the selection",
              file=sys.stderr)  # fmt:skip
        return EXIT_NO_MATCH
    print("\n".join(labels))
    return EXIT_OK


def run_participant(config: Config) -> int:
    code = validate_input(config)
    if code is not None:
        return code
    execution = config.execution
    started = datetime.now()
    failures: list[Failure] = []
    try:
        try:
            scans = collect_t1w(
                execution.bids_dir,
                execution.participant_label,
                execution.session_label,
                execution.bids_filters,
            )
        except InputError as err:
            print(f"bids_brainage: {err}", file=sys.stderr)
            return EXIT_INVALID_BIDS
        if not scans:
            print(
                f"bids_brainage: no T1w image in {execution.bids_dir} matches the selection "
                f"(participants {execution.participant_label or 'all'}, sessions "
                f"{execution.session_label or 'all'}, filters {execution.bids_filters or 'none'})",
                file=sys.stderr,
            )
            return EXIT_NO_MATCH
        runnable = [scan for scan in scans if scan.error is None]
        for scan in scans:
            if scan.error is not None:
                crash = write_crash_file(execution.log_dir, scan.key, scan.error)
                failures.append(Failure(scan.key, scan.error, crash))
        LOGGER.info(
            "processing %d T1w scan(s) of %d participant(s)",
            len(runnable),
            len({s.subject for s in runnable}),
        )
        if runnable:
            try:
                failures += run_graph(config, runnable)
            except BundleError as err:
                print(f"bids_brainage: {err}", file=sys.stderr)
                return EXIT_USAGE
        failed = {f.key: f.reason for f in failures}
        if not execution.no_reports:
            write_subject_reports(execution.output_dir, {s.subject for s in scans}, failed,
                                  config.nipype.nprocs)  # fmt:skip
        record_outcomes(
            execution.output_dir,
            [s.key for s in runnable],
            [(f.key, f.reason, f.crash_file) for f in failures],
        )
        if not execution.quiet:
            print_predictions(execution.output_dir, runnable, failures)
    finally:
        write_derivatives_root(execution.output_dir, execution.bids_dir)
        config.dump(execution.log_dir / f"config-{execution.run_uuid}.json")
    return report(failures, len(scans), started)


def print_predictions(output_dir: Path, runnable: list[T1wScan], failures: list[Failure]) -> None:
    """One console line per processed scan: each model's brain age and its flags."""
    import pandas as pd

    failed = {f.key for f in failures}
    for scan in runnable:
        if scan.key in failed:
            continue
        path = ScanDerivatives(output_dir, scan.entities).brainage
        try:
            table = pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)
        except (OSError, ValueError):
            continue  # preprocessing only (--model none)
        parts = []
        for row in table.itertuples():
            flags = row.flags if isinstance(getattr(row, "flags", None), str) else "none"
            parts.append(f"{row.model} {row.predicted_age:.1f} y (flags: {flags})")
        print(f"bids_brainage: {scan.key}: brain age " + "; ".join(parts))


def report(failures: list[Failure], n_scans: int, started: datetime) -> int:
    elapsed = (datetime.now() - started).total_seconds()
    if not failures:
        LOGGER.info("all %d scan(s) processed in %.0f s", n_scans, elapsed)
        return EXIT_OK
    print(
        f"bids_brainage: {len(failures)} of {n_scans} scan(s) failed "
        f"(the others finished; {elapsed:.0f} s):",
        file=sys.stderr,
    )
    for failure in failures:
        where = f" [{failure.crash_file.name}]" if failure.crash_file else ""
        print(f"  {failure.key}: {failure.reason}{where}", file=sys.stderr)
    return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
