"""The participant graph's run: bundles resolved, the Nipype graph built and run, its crash
files read back into one line per failed scan, and the methods text (as fMRIPrep's
``cli/workflow.py``).
"""

from __future__ import annotations

import gc
import getpass
import logging
import os
import re
import subprocess
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .. import __version__
from ..config import NEW_PREPROCESSING, Config, bias_correction_with
from ..models.bundle import load_selected_bundles
from ..models.kinds import BundlePlan
from ..utils.atlas import SOURCE as ATLAS_SOURCE
from ..utils.atlas import harvard_oxford
from ..utils.bids import T1wScan
from ..utils.io import write_text_atomic
from ..utils.templates import DEFAULT_TEMPLATE, resolve_template

LOGGER = logging.getLogger("bids_brainage")
# Nipype's scheduler walks the whole graph at every poll, in the main process: a batch plugin
# also asks the queue each time. benchmarks/scheduler_overhead.py measured the interval.
MULTIPROC_POLL_S = 0.05
BATCH_POLL_S = 2.0
EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception|Interrupt)): (.+)$")


def resolve_preprocessing(settings, bundles) -> None:
    """Each "auto" preprocessing choice becomes the first bundle's contract value (the others
    are checked and flagged when they differ); without bundles (preprocessing for training),
    what new bundles are trained on (``NEW_PREPROCESSING``).
    """
    bias_correction_chosen = settings.bias_correction != "auto"
    for key in NEW_PREPROCESSING:
        if getattr(settings, key) == "auto":
            value = bundles[0].preprocessed_with(key) if bundles else NEW_PREPROCESSING[key]
            setattr(settings, key, value)
    settings.bias_correction = bias_correction_with(
        settings.contrast_standardisation, settings.bias_correction, bias_correction_chosen)


@dataclass
class Failure:
    """A scan that produced no outputs, and the one-line reason why."""

    key: str
    reason: str
    crash_file: Path | None = None


def wait_for_graph_jobs(work_dir: Path, poll_s: float = 2.0) -> None:
    """Wait until none of the jobs that Nipype's SLURMGraph submitted (named in its newest
    submit_jobs.sh) is in the queue; their crash files then say which scans failed.
    """
    scripts = sorted(Path(work_dir).rglob("submit_jobs.sh"), key=lambda p: p.stat().st_mtime)
    if not scripts:
        return
    names = set(re.findall(r" -J (\S+) ", scripts[-1].read_text()))
    LOGGER.info("waiting for %d SLURM job(s) submitted by SLURMGraph", len(names))
    while True:
        queue = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True)
        if queue.returncode == 0 and not names & set(queue.stdout.split()):
            return
        time.sleep(poll_s)


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
    resolve_preprocessing(config.workflow, bundles)
    config.models.plan = BundlePlan.of([b.describe() for b in bundles])
    if config.models.plan.local is not None:
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
        # by content, not timestamp: a dataset copied or re-synced (new mtimes) reuses -w
        "hash_method": "content",
        "poll_sleep_duration": BATCH_POLL_S if config.nipype.batch_plugin else MULTIPROC_POLL_S,
    }
    # The scheduler reads its poll interval from the global config, nodes from the workflow's.
    from nipype import config as nipype_config

    nipype_config.update_config({"execution": execution_settings})
    workflow.config["execution"] = execution_settings
    methods = methods_text(workflow) + f"\n\nTemplate: {template.name} ({template.source})."
    write_text_atomic(log_dir / "CITATION.md", citation(methods))
    before = set(log_dir.glob("crash-*.txt"))
    plugin, plugin_args = config.nipype.plugin, config.nipype.plugin_args
    if not plugin.endswith("Graph"):  # Graph plugins submit everything at once: no callback
        plugin_args["status_callback"] = scan_progress(workflow, scans, execution.quiet)
    if config.nipype.batch_plugin:  # Nipype's SLURM plugin reads LOGNAME
        os.environ.setdefault("LOGNAME", getpass.getuser())
    # MultiProc runs a full gc.collect() before each submission: with torch and the graph
    # loaded that took 0.33 s a time, 14 s of the main process's 31 s CPU on 3 scans. Objects
    # alive now (imports, bundles, the graph) are kept out of those collections.
    gc.freeze()
    try:
        workflow.run(plugin=plugin, plugin_args=plugin_args)
    except RuntimeError as err:  # raised after every runnable node has run
        LOGGER.debug("nipype: %s", err)
    finally:
        gc.unfreeze()
    if plugin == "SLURMGraph":  # it returns once the jobs are submitted: wait for them
        wait_for_graph_jobs(execution.work_dir)
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

    from ..utils.progress import ScanProgress, brain_age_text
    from ..workflows.base import scan_workflow_name, subject_workflow_name

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


def citation(methods: str) -> str:
    return (
        "# Methods\n\n"
        f"Results were generated with bids_brainage {__version__}, a BIDS-App built on "
        "Nipype, pybids, NiBabel and ANTsPy.\n\n"
        f"{methods}\n"
    )
