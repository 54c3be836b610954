"""Entry point: ``bids_brainage BIDS_DIR OUTPUT_DIR {participant,group} [options]``."""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import shutil
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .. import __version__
from ..config import Config
from ..models.bundle import (
    IMPORTANCE_KINDS,
    LOCAL_KINDS,
    Bundle,
    BundleError,
    load_bundle,
    resolve_bundle,
)
from ..utils.atlas import SOURCE as ATLAS_SOURCE
from ..utils.atlas import harvard_oxford
from ..utils.bids import (
    InputError,
    T1wScan,
    collect_t1w,
    format_validator_issue,
    run_bids_validator,
)
from ..utils.derivatives import (
    clear_failure_record,
    write_derivatives_root,
    write_failure_record,
)
from ..utils.io import write_text_atomic
from ..utils.templates import DEFAULT_TEMPLATE, resolve_template
from .parser import (
    EXIT_FAILED,
    EXIT_INVALID_BIDS,
    EXIT_NO_MATCH,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    parse_args,
)
from .safety import OutputError, check_writable, describe_failure

LOGGER = logging.getLogger("bids_brainage")
EXIT_INTERRUPTED = 130  # the shell's convention for a process stopped by SIGINT
EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception|Interrupt)): (.+)$")


@dataclass
class Failure:
    """A scan that produced no outputs, and the one-line reason why."""

    key: str
    reason: str
    crash_file: Path | None = None


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
    try:
        check_writable(execution.output_dir, "OUTPUT_DIR")
        check_writable(execution.work_dir, "the work folder")
    except OutputError as err:
        print(str(err), file=sys.stderr)
        return err.code
    try:
        setup_logging(execution.verbosity, execution.quiet)
        _stop_cleanly_on_signals(config)
        config.seeds.apply()
        LOGGER.info("bids_brainage %s, %s level", __version__, execution.analysis_level)
        from .group import run_group

        level = run_participant if execution.analysis_level == "participant" else run_group
        return level(config)
    except Exception as exc:  # noqa: BLE001 - the console gets one line, the file the traceback
        line, code = describe_failure(exc, execution.log_dir, execution.analysis_level)
        print(line, file=sys.stderr)
        return code


def _stop_cleanly_on_signals(config: Config) -> None:
    """Ctrl-C (SIGINT) and schedulers' SIGTERM stop the whole run at once.

    Nipype turns an interrupt raised inside a node into a node failure and carries on, so the
    handler does not raise: it stops the worker processes, removes this process's unfinished
    temporary files from OUTPUT_DIR (finished files were renamed into place atomically, so
    they are whole), rewrites dataset_description.json and exits with 130.
    """
    execution = config.execution
    main_pid = os.getpid()

    def stop(signum, frame):
        if os.getpid() != main_pid:  # a forked worker: the main process does the cleaning
            os._exit(EXIT_INTERRUPTED)
        for child in multiprocessing.active_children():
            child.terminate()
        for partial in execution.output_dir.rglob(f"*.{os.getpid()}.partial*"):
            if partial.is_dir():
                shutil.rmtree(partial, ignore_errors=True)  # an uncommitted group staging tree
            else:
                partial.unlink(missing_ok=True)
        write_derivatives_root(execution.output_dir, execution.bids_dir)
        print(
            f"bids_brainage: stopped by signal {signum}; OUTPUT_DIR holds only complete files",
            file=sys.stderr,
        )
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)


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
        write_reports(execution.output_dir, scans, failures)
        record_outcomes(execution.output_dir, runnable, failures)
        if not execution.quiet:
            print_predictions(execution.output_dir, runnable, failures)
    finally:
        write_derivatives_root(execution.output_dir, execution.bids_dir)
        config.dump(execution.log_dir / f"config-{execution.run_uuid}.json")
    return report(failures, len(scans), started)


def record_outcomes(output_dir: Path, runnable: list[T1wScan], failures: list[Failure]) -> None:
    """A record per failed scan for the group level; a scan that now succeeded loses its own."""
    failed = {f.key for f in failures}
    for failure in failures:
        if failure.key.startswith("sub-"):  # "unknown scan": a crash no scan could be found for
            write_failure_record(output_dir, failure.key, failure.reason, failure.crash_file)
    for scan in runnable:
        if scan.key not in failed:
            clear_failure_record(output_dir, scan.key)


def print_predictions(output_dir: Path, runnable: list[T1wScan], failures: list[Failure]) -> None:
    """One console line per processed scan: each model's brain age and its flags."""
    import pandas as pd

    from ..utils.derivatives import derivative_path

    failed = {f.key for f in failures}
    for scan in runnable:
        if scan.key in failed:
            continue
        path = output_dir / derivative_path({**scan.entities, "suffix": "brainage",
                                             "extension": ".tsv"})  # fmt:skip
        try:
            table = pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)
        except (OSError, ValueError):
            continue  # preprocessing only (--model none)
        parts = []
        for row in table.itertuples():
            flags = row.flags if isinstance(getattr(row, "flags", None), str) else "none"
            parts.append(f"{row.model} {row.predicted_age:.1f} y (flags: {flags})")
        print(f"bids_brainage: {scan.key}: brain age " + "; ".join(parts))


def load_selected_bundles(specs: list[str]) -> list[Bundle]:
    """The ``--model`` bundles, loaded and checksummed once; ``none`` means preprocessing only."""
    if [s.lower() for s in specs] == ["none"]:
        return []
    bundles = [load_bundle(resolve_bundle(spec)) for spec in specs]
    names = [b.name for b in bundles]
    if len(set(names)) != len(names):
        raise BundleError(f"two --model bundles share a name: {names}")
    if bundles and all(b.kind in IMPORTANCE_KINDS for b in bundles):
        raise BundleError(f"--model {' '.join(specs)}: only importance models; add a bundle "
                          "that predicts brain age")  # fmt:skip
    templates = {b.card["contract"]["template"] for b in bundles}
    if len(templates) > 1:
        raise BundleError(f"the --model bundles were trained on different templates: {templates}")
    return bundles


def describe_bundle(bundle: Bundle) -> dict:
    """What the prediction workflow needs to know of a bundle (it travels as a plain dict)."""
    data = bundle.card["training_data"]
    dataset = data["dataset"].get("Name", "unnamed data")
    described = {"path": str(bundle.path), "name": bundle.name, "kind": bundle.kind,
                 "data": f"{data['n_scans']} scans of {dataset}"}  # fmt:skip
    if bundle.kind in IMPORTANCE_KINDS:
        return {**described, "explains": bundle.card["explains"]["name"]}
    return {
        **described,
        "mae": bundle.card["cross_validation"]["random"]["metrics"]["mae"]["mean"],
    }


def run_graph(config: Config, scans: list[T1wScan]) -> list[Failure]:
    """Build and run the Nipype graph; return the scans that failed."""
    from ..workflows.base import (
        init_brainage_wf,
        methods_text,
        scan_workflow_name,
        subject_workflow_name,
    )

    execution = config.execution
    log_dir = execution.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    execution.work_dir.mkdir(parents=True, exist_ok=True)
    config.nipype.limit_threads()
    bundles = load_selected_bundles(config.models.models)
    template = resolve_template(
        execution.work_dir / "templates",
        resolution=2,
        # preprocessing follows the bundles' template
        name=bundles[0].card["contract"]["template"] if bundles else DEFAULT_TEMPLATE,
        allow_download=config.workflow.allow_template_download,
    )
    config.workflow.template = template.to_dict()
    LOGGER.info("template %s (%s)", template.name, template.source)
    for bundle in bundles:
        bundle.check_contract(config.workflow.template)
        trained_with = bundle.card.get("contract", {}).get("brain_extraction")
        if trained_with and trained_with != config.workflow.brain_extraction:
            LOGGER.warning("%s was trained on %s brain masks, this run makes %s masks: its "
                           "predictions are flagged brain_extraction_unlike_training",
                           bundle.name, trained_with, config.workflow.brain_extraction)  # fmt:skip
    config.models.bundles = [describe_bundle(b) for b in bundles]
    if any(b.kind in LOCAL_KINDS for b in bundles):
        labels, names = harvard_oxford(template, execution.work_dir / "templates")
        config.models.atlas = {"labels": str(labels), "names": names, "source": ATLAS_SOURCE}
    workflow = init_brainage_wf(config, scans)
    execution_settings = {
        "crashdump_dir": str(log_dir),
        "crashfile_format": "txt",
        "stop_on_first_crash": False,
        "remove_unnecessary_outputs": False,
        "check_version": False,
        "get_linked_libs": False,
        "poll_sleep_duration": 0.05,
    }
    # The scheduler reads its poll interval from the global config, nodes from the workflow's.
    from nipype import config as nipype_config

    nipype_config.update_config({"execution": execution_settings})
    workflow.config["execution"] = execution_settings
    methods = methods_text(workflow) + f"\n\nTemplate: {template.name} ({template.source})."
    write_text_atomic(log_dir / "CITATION.md", citation(methods))
    before = set(log_dir.glob("crash-*.txt"))
    plugin_args = {**config.nipype.plugin_args,
                   "status_callback": scan_progress(workflow, scans, execution.quiet)}  # fmt:skip
    try:
        workflow.run(plugin=config.nipype.plugin, plugin_args=plugin_args)
    except RuntimeError as err:  # raised after every runnable node has run
        LOGGER.debug("nipype: %s", err)
    by_workflow = {(subject_workflow_name(s.subject), scan_workflow_name(s)): s for s in scans}
    failures = []
    for crash in sorted(set(log_dir.glob("crash-*.txt")) - before):
        scan, reason = read_crash_file(crash, by_workflow)
        if scan is None:
            failures.append(Failure("unknown scan", reason, crash))
            continue
        if str(scan.path) not in reason:  # every line names the file it is about
            reason = f"{scan.path}: {reason}"
        failures.append(Failure(scan.key, reason, crash))
    return failures


def scan_progress(workflow, scans: list[T1wScan], quiet: bool):
    """The callback that prints ``[k/N] sub-01: done in 31 s, brain age ...`` lines."""
    from collections import Counter

    from ..workflows.base import scan_workflow_name, subject_workflow_name
    from .progress import ScanProgress, brain_age_text

    prefixes = {f"{subject_workflow_name(s.subject)}.{scan_workflow_name(s)}.": s.key
                for s in scans}  # fmt:skip
    # node names below the top workflow: sub_01_wf.t1w_wf.anat_wf.n4, counted in one pass;
    # Nipype drops identity nodes from the graph it runs, so they never report
    from nipype.interfaces.utility import IdentityInterface

    running = [n for n in workflow.list_node_names()
               if not isinstance(workflow.get_node(n).interface, IdentityInterface)]  # fmt:skip
    counts = Counter(".".join(n.split(".")[:2]) + "." for n in running)
    expected = {p: counts[p] for p in prefixes}
    return ScanProgress(prefixes, expected, describe=brain_age_text, quiet=quiet)


def write_reports(output_dir: Path, scans: list[T1wScan], failures: list[Failure]) -> None:
    """One HTML report per participant, from what was committed (failed scans listed)."""
    from ..reports.subject import write_subject_report

    for subject in sorted({scan.subject for scan in scans}):
        failed = {f.key: f.reason for f in failures if f.key.split("_")[0] == f"sub-{subject}"}
        try:
            write_subject_report(output_dir, subject, failed)
        except Exception as err:  # a report must never cost the results themselves
            LOGGER.warning("sub-%s: report not written (%s: %s)", subject, type(err).__name__, err)


def read_crash_file(crash: Path, by_workflow: dict) -> tuple[T1wScan | None, str]:
    """Which scan a Nipype crash file is about, and the one-line reason it gives."""
    text = crash.read_text(errors="replace").splitlines()
    node = next((line.split(":", 1)[1].strip() for line in text if line.startswith("Node:")), "")
    parts = node.split(".")
    scan = next(
        (
            s
            for (sub_wf, scan_wf), s in by_workflow.items()
            if sub_wf in parts and scan_wf in parts
        ),
        None,
    )
    reason = "unknown error"
    for line in reversed(text):
        match = EXCEPTION_LINE.match(line.strip())
        if match:
            kind, message = match.groups()
            reason = message if kind == "InputError" else f"{kind}: {message}"
            break
    return scan, reason


def write_crash_file(log_dir: Path, key: str, reason: str) -> Path:
    """A crash file for a scan that failed before the graph (e.g. a bad participants.tsv row)."""
    path = log_dir / f"crash-{datetime.now():%Y%m%d-%H%M%S}-{key}.txt"
    stack = "".join(traceback.format_stack(limit=3))
    write_text_atomic(path, f"Scan: {key}\n\n{stack}InputError: {reason}\n")
    return path


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


def citation(methods: str) -> str:
    return (
        "# Methods\n\n"
        f"Results were generated with bids_brainage {__version__}, a BIDS-App built on "
        "Nipype, pybids, NiBabel and ANTsPy.\n\n"
        f"{methods}\n"
    )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
