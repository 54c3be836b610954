"""Group level: read the participant-level derivatives in OUTPUT_DIR (never recompute them),
call the ``group`` library, and say what it found on the console.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from ..config import Config
from ..group.collect import (
    collect_scan_table,
    has_derivatives,
    participant_level_gaps,
    read_dataset_description,
    version_notes,
)
from ..group.outputs import GroupWriter, write_group_outputs
from ..group.statistics import (
    GroupResults,
    GroupSettings,
    StatisticsError,
    analyse,
    read_external_reference,
)
from ..group.summary import describe_bundle, describe_results
from ..models.bundle import BundleError
from ..models.inputs import ContractError
from ..reports.group import write_group_report
from ..utils.bids import InputError
from ..utils.derivatives import write_derivatives_root
from ..utils.io import staged_tree
from .parser import EXIT_FAILED, EXIT_INVALID_BIDS, EXIT_NO_MATCH, EXIT_OK, EXIT_USAGE

LOGGER = logging.getLogger("bids_brainage")
GROUP_OUTPUTS = ("group", "group.html")  # replaced together by every group run


def check_statistics_options(config: Config, table) -> None:
    """Options that can only be checked against the data: fail before any work."""
    query = config.statistics.bias_reference_query
    if query:
        try:
            table.query(query)
        except Exception as err:  # pandas raises many kinds on a bad query
            raise StatisticsError(f"--bias-reference-query {query!r}: {err}") from None
    if config.statistics.bias_reference not in ("auto", "controls", "bundle", "all"):
        read_external_reference(Path(config.statistics.bias_reference))


def group_settings(config: Config) -> GroupSettings:
    return GroupSettings(config.statistics, config.models.control_labels,
                         config.seeds.derive("stats"), config.nipype.nprocs,
                         config.execution.output_dir)  # fmt:skip


def run_group(config: Config) -> int:
    execution = config.execution
    stages = 4 if config.models.train_model else 3

    def stage(k: int, text: str) -> None:
        if not execution.quiet:
            print(f"bids_brainage group: [{k}/{stages}] {text}", flush=True)

    try:
        if not has_derivatives(execution.output_dir):
            print(
                f"bids_brainage: no participant-level derivatives in {execution.output_dir}; "
                "run the participant level first",
                file=sys.stderr,
            )
            return EXIT_NO_MATCH
        stage(1, f"collecting the participant-level derivatives in {execution.output_dir}")
        try:
            table, problems = collect_scan_table(execution.bids_dir, execution.output_dir,
                                                 execution.participant_label,
                                                 execution.session_label)  # fmt:skip
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
        stage(
            2,
            f"statistics over {len(table)} scan(s) (bias correction, group tests, ROC, "
            "ICC, voxel-wise maps)",
        )
        results = analyse(table, group_settings(config))
        results.skipped = version_notes(table) + results.skipped
        results.gaps = participant_level_gaps(execution.bids_dir, execution.output_dir, table,
                                              execution.participant_label)  # fmt:skip
        for line in results.problems + results.gaps:
            LOGGER.warning(line)
        stage(3, "writing the group tables, maps and report")
        with staged_tree(execution.output_dir, GROUP_OUTPUTS, "group") as root:
            writer = GroupWriter(root, execution.work_dir / "group_staging")
            written = write_group_outputs(results, writer)
            write_group_report(results, config.models.control_labels, written, root)
        written = [execution.output_dir / path.relative_to(root) for path in written]
        print_results(results, table, written[0], execution.output_dir)
        if config.models.train_model:
            stage(4, f"training {config.models.train_model} ({config.models.model_kind})")
            code = train(config, table)
            if code != EXIT_OK:
                return code
    finally:
        write_derivatives_root(execution.output_dir, execution.bids_dir)
    return EXIT_FAILED if problems else EXIT_OK


def train(config: Config, table) -> int:
    """``--train-model``: train, then print the bundle's cross-validation figures."""
    from ..group.training import TrainingError, TrainingRun, run_training

    execution = config.execution
    run = TrainingRun(config.models, execution.output_dir, config.seeds.derive("training"),
                      max(1, config.nipype.nprocs * config.nipype.omp_nthreads))  # fmt:skip
    try:
        bundle = run_training(run, table, read_dataset_description(execution.bids_dir))
    except (TrainingError, BundleError, ContractError) as err:
        print(f"bids_brainage: training {config.models.train_model}: {err}", file=sys.stderr)
        return EXIT_FAILED
    print_training_summary(bundle)
    return EXIT_OK


def print_results(results: GroupResults, table, scans_table: Path, output_dir: Path) -> None:
    n_age = int(table["age"].notna().sum())
    n_excluded = int(results.scans["excluded"].notna().sum())
    print(
        f"bids_brainage group: {len(table)} scan(s) of {table['participant_id'].nunique()} "
        f"participant(s), {n_age} with an age, {n_excluded} excluded from the statistics; "
        f"table written to {scans_table}"
    )
    for line in describe_results(results):
        print(f"bids_brainage group: {line}")
    for line in results.skipped:
        print(f"bids_brainage group: skipped: {line}")
    print(f"bids_brainage group: report {output_dir / 'group.html'}")


def print_training_summary(bundle: Path) -> None:
    card = json.loads((bundle / "model.json").read_text())
    for line in describe_bundle(card):
        print(f"bids_brainage group: {line}")
    print(f"bids_brainage group: bundle and model card written to {bundle}")
