"""Command line of the BIDS-App: ``bids_brainage BIDS_DIR OUTPUT_DIR {participant,group}``."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import tempfile
import uuid
from datetime import datetime
from pathlib import Path

from .. import __version__
from ..config import (
    DEFAULT_CONTROL_LABELS,
    MIN_BIAS_CONTROLS,
    Config,
    ExecutionSettings,
    ModelSettings,
    NipypeSettings,
    Seeds,
    StatisticsSettings,
    WorkflowSettings,
)
from ..models.bundle import DEFAULT_MODELS, default_models
from ..models.kinds import KINDS
from ..preprocessing.anatomical import INTENSITY_SETTINGS
from ..utils.bids import InputError, load_filters

ANALYSIS_LEVELS = ("participant", "group")

# Exit codes of the BIDS-Apps execution specification.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID_BIDS = 16
EXIT_UNKNOWN_LEVEL = 17
EXIT_NO_MATCH = 18
EXIT_USAGE = 64


NIPYPE_PLUGINS = ("MultiProc", "Linear", "SLURM", "SLURMGraph", "SGE", "SGEGraph", "PBS",
                  "PBSGraph")  # fmt:skip


class UsageError(Exception):
    """A command-line mistake; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would exit 2; the BIDS-App spec says 64
        raise UsageError(f"{self.prog}: error: {message}")


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bids_brainage",
        description="Brain age from T1-weighted MRI: global age, local age maps and group "
        "statistics, as a BIDS-App.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    # fmt: off
    add = parser.add_argument
    add("bids_dir", type=Path, help="the root of the BIDS dataset (read only)")
    add("output_dir", type=Path, help="where the derivatives are written")
    add("analysis_level", metavar="{participant,group}",
        help="participant: process each T1w scan; group: statistics over OUTPUT_DIR")
    add("--version", action="version", version=f"bids_brainage {__version__}")
    add("-v", "--verbose", dest="verbosity", action="count", default=0,
        help="more output (-v info, -vv debug)")
    add("-q", "--quiet", action="store_true",
        help="no progress lines (one per scan at the participant level, the stages at the group "
        "level); warnings and errors still print")

    add = parser.add_argument_group("selecting data").add_argument
    add("--participant-label", "--participant_label", nargs="+", metavar="LABEL",
        help="participants to process, with or without 'sub-' (default: all)")
    add("--session-label", "--session_label", nargs="+", metavar="LABEL",
        help="sessions to process, with or without 'ses-' (default: all)")
    add("--bids-filter-file", "--bids_filter_file", type=Path, metavar="FILE",
        help='JSON of pybids filters, fMRIPrep style: {"t1w": {"acquisition": "mprage"}}')
    add("--list-participants", action="store_true",
        help="print the labels of the participants the selection finds, one per line, and "
        "stop: nothing is written (a scheduler script's task list, scripts/slurm/submit.sh)")
    add("--skip-bids-validation", "--skip_bids_validation", action="store_true",
        help="do not run the official BIDS validator on BIDS_DIR")
    add("--no-reports", action="store_true",
        help="participant: write no HTML reports (the derivatives and QC files are written as "
        "always); for runs that only feed training, such as nuisance copies: the reportlets "
        "take 10-20 s per scan")

    add = parser.add_argument_group("preprocessing").add_argument
    add("--registration", choices=("fast", "precise"), default="fast",
        help="SyN preset: fast (default) or precise (more iterations, slower)")
    add("--brain-extraction", choices=("deepbet", "template"), default="deepbet",
        help="brain mask: deepbet (default; a CNN whose weights ship in its PyPI wheel, what the "
        "packaged models were trained with) or template (the head registered to the template "
        "head, mask refined by tissue classes)")
    add("--field-of-view", choices=("auto", "head", "stored"), default="auto",
        help="auto (default): what the --model bundles were trained on (bundles older than the "
        "head grid: stored); head: each scan cut or padded to its head plus 16 mm, registration "
        "from the brains' centres of mass; stored: the scan's own field of view. Predictions "
        "of a bundle trained otherwise are flagged field_of_view_unlike_training")
    add("--intensity-scale", choices=("auto", *INTENSITY_SETTINGS), default="auto",
        help="auto (default): what the --model bundles were trained on (bundles older than the "
        "choice, and --model none: linear); linear: registration and "
        "Atropos work on the intensities; log: on their logarithm, which makes the warp and "
        "the tissue classes blind to a power-law change of contrast; log-registration: the "
        "warp on the logarithm, Atropos on the intensities (the log scale makes Atropos "
        "sensitive to noise). Predictions of a bundle trained otherwise are flagged "
        "intensity_scale_unlike_training")
    add("--stripped-n4-grid", choices=("auto", "brain", "head"), default="auto",
        help="for a skull-stripped input, the grid N4 estimates its bias field on: auto "
        "(default): what the --model bundles were trained on (bundles older than this choice: "
        "brain; with --model none: head); brain: the brain's own grid; head: the grid a head "
        "would have (the brain's box plus the IXI heads' median margins), which makes the "
        "correction independent of how much margin the stripped brain is stored with")
    add("--denoising", choices=("auto", "none", "rician"), default="auto",
        help="auto (default): what the --model bundles were trained on (bundles older than this "
        "choice, and --model none: none); rician: denoise before N4 (ANTs non-local "
        "means, Rician model), which keeps noise from pulling predictions towards the "
        "training mean. Predictions of a bundle trained otherwise are flagged "
        "denoising_unlike_training")
    add("--contrast-standardisation", choices=("auto", "none", "power"), default="auto",
        help="auto (default): what the --model bundles were trained on (bundles older than this "
        "choice, and --model none: none); power: after a first N4, the image is raised to the "
        "power that puts its grey/white-matter intensity ratio at one value and corrected with "
        "N4 again, so that N4 and the tissue classes see one contrast. That ratio also falls "
        "with age (Spearman -0.76 over the IXI heads), so the step takes out age-related "
        "contrast as well as the scanner's (measured, no packaged bundle uses it). Predictions "
        "of a bundle trained otherwise are flagged contrast_standardisation_unlike_training")
    add("--bias-correction", choices=("auto", "head", "brain"), default="auto",
        help="auto (default): what the --model bundles were trained on (the packaged ones "
        "and --model none: brain; bundles older than this choice, and any run with "
        "--contrast-standardisation power: head); head: registration and tissue classes read "
        "the N4 image corrected inside the head mask; brain: N4 again after brain extraction, "
        "inside the brain mask, its field estimated on a grid of fixed margins around the "
        "brain, so that a head and the same brain given skull-stripped are corrected alike. "
        "Predictions of a bundle trained otherwise are flagged bias_correction_unlike_training")
    add("--allow-template-download", action="store_true",
        help="let TemplateFlow download MNI152NLin2009cAsym if it is not on disk "
        "(default: never download; use the packaged offline template instead)")

    add = parser.add_argument_group("models").add_argument
    add("--model", nargs="+", default=None, metavar="BUNDLE",
        help="participant: model bundles, each a bundle folder or the name of a packaged bundle: "
        "global brain age, a local-unet (local maps) and a unoise bundle (importance maps); "
        "'none' preprocesses only (default: the packaged " + ", ".join(DEFAULT_MODELS) + ")")
    add("--train-model", metavar="NAME",
        help="group: train a model bundle called NAME on the participants with an age (controls "
        "only, if participants.tsv has a group column), into OUTPUT_DIR/models/NAME")
    add("--model-kind", choices=KINDS, help="group: what --train-model trains")
    add("--ensemble-members", nargs="+", default=[], metavar="BUNDLE",
        help="group, with --model-kind ensemble: trained bundles to average (same data and seed)")
    add("--explain-model", metavar="BUNDLE",
        help="group, with --model-kind unoise: the frozen bundle whose important voxels the "
        "U-noise model learns (a CNN, tissue-linear or an ensemble of them)")
    add("--cv-folds", type=_positive_int, default=5,
        help="group: folds of the random-split cross-validation")
    add("--control-label", nargs="+", default=list(DEFAULT_CONTROL_LABELS), metavar="LABEL",
        help="values of the participants.tsv group column that mean a healthy control")
    add("--max-epochs", type=_positive_int,
        help="group: cap on CNN training epochs (default: the kind's own setting)")
    add("--tissue-scaling", choices=("tiv", "none"), default="tiv",
        help="group: tissue-map models learn from GM/WM maps scaled to one total intracranial "
             "volume (tiv, default: blind to head size and to a linear alignment of the input "
             "to a template) or from the maps as they are (none)")

    add = parser.add_argument_group("group statistics").add_argument
    add("--bias-reference", default="auto", metavar="SET",
        help="group: scans the age-bias correction is fitted on: 'controls' (the control "
        "group), 'bundle' (the model bundle's own out-of-fold predictions), a TSV path with age "
        "and predicted_age columns (another dataset), or 'all' (every scan, the test "
        "participants themselves; warns). Default 'auto': controls if there are at least "
        f"{MIN_BIAS_CONTROLS}, else the bundle")
    add("--bias-reference-query", metavar="QUERY",
        help="group: narrow the controls used as bias reference with a pandas query on the "
        'scan table, e.g. "age >= 60" or "site == \'A\'"')
    add("--bias-form", choices=("age", "predicted"), default="age",
        help="group: regress brain-PAD on chronological age (seed 002 Eq. 6-7, default) or on "
        "predicted age (Eq. 8)")
    add("--site-calibration", choices=("auto", "off"), default="auto",
        help="group: correct each site with at least 20 controls on its own controls (offset, "
        "plus a slope where they span 20 years; default auto), or only the pooled line (off)")
    add("--include-failed-qc", action="store_true",
        help="group: keep scans whose QC flags say the preprocessing failed (default: exclude "
        "them, listed with the reason)")

    add = parser.add_argument_group("resources").add_argument
    add("--nprocs", "--n_cpus", "--n-cpus", dest="nprocs", type=_positive_int,
        default=os.cpu_count() or 1, help="processes run at once")
    add("--omp-nthreads", "--omp_nthreads", type=_positive_int, default=1,
        help="threads per process (ANTs, torch)")
    add("--mem-gb", "--mem_gb", type=_positive_float, metavar="GB",
        help="memory the scheduler may use")
    add("--use-plugin", "--use_plugin", type=Path, metavar="FILE",
        help="YAML with 'plugin:' (MultiProc, Linear, SLURM, SLURMGraph, SGE, SGEGraph, PBS, "
        "PBSGraph) and 'plugin_args:', passed to Nipype for the participant graph")
    add("-w", "--work-dir", "--work_dir", type=Path, metavar="DIR",
        help="intermediate results, reused between runs and matched by file content "
        "(default: a folder in the system's temporary directory)")
    add("--seed", type=int, default=Seeds.master,
        help="master random seed; same input and seed give the same output")
    # fmt: on
    return parser


def read_plugin_file(path: Path | None) -> dict | None:
    """``--use-plugin``: the Nipype plugin and its arguments, checked (fMRIPrep's format)."""
    if path is None:
        return None
    import yaml

    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UsageError(f"--use-plugin {path}: cannot be read as YAML ({err})") from None
    if not isinstance(spec, dict) or spec.get("plugin") not in NIPYPE_PLUGINS:
        raise UsageError(f"--use-plugin {path}: 'plugin:' must be one of "
                         f"{', '.join(NIPYPE_PLUGINS)}")  # fmt:skip
    args = spec.get("plugin_args") or {}
    if not isinstance(args, dict):
        raise UsageError(f"--use-plugin {path}: 'plugin_args:' must be a mapping")
    return {"plugin": spec["plugin"], "plugin_args": args}


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def default_work_dir(bids_dir: Path, output_dir: Path) -> Path:
    """A cache folder per (dataset, output) pair, so that runs on other data never share it."""
    key = hashlib.sha1(f"{bids_dir.resolve()}|{output_dir.resolve()}".encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"bids_brainage_work_{os.getuid()}" / key


def parse_args(argv: list[str] | None = None) -> Config:
    """Parse and check the command line; raise UsageError with the BIDS-App exit code."""
    opts = build_parser().parse_args(argv)
    if opts.analysis_level not in ANALYSIS_LEVELS:
        raise UsageError(
            f"unknown analysis level {opts.analysis_level!r}; choose participant or group",
            EXIT_UNKNOWN_LEVEL,
        )
    bids_dir = opts.bids_dir.absolute()
    output_dir = opts.output_dir.absolute()
    if not bids_dir.is_dir():
        raise UsageError(f"{bids_dir}: BIDS_DIR is not a folder")
    if output_dir.resolve() == bids_dir.resolve():
        raise UsageError(f"{output_dir}: OUTPUT_DIR must not be BIDS_DIR (input is read only)")
    if _inside(output_dir, bids_dir):
        raise UsageError(
            f"{output_dir}: OUTPUT_DIR must not be inside BIDS_DIR, which is never written to"
        )
    work_dir = (
        opts.work_dir.absolute() if opts.work_dir else default_work_dir(bids_dir, output_dir)
    )
    if _inside(work_dir, bids_dir):
        raise UsageError(f"{work_dir}: the work directory must not be inside BIDS_DIR")
    if _inside(work_dir, output_dir):
        raise UsageError(f"{work_dir}: the work directory must not be inside OUTPUT_DIR")
    try:
        filters = load_filters(opts.bids_filter_file)
    except InputError as err:
        raise UsageError(str(err)) from err

    run_uuid = f"{datetime.now():%Y%m%d-%H%M%S}_{uuid.uuid4().hex[:8]}"
    execution = ExecutionSettings(
        bids_dir=bids_dir,
        output_dir=output_dir,
        analysis_level=opts.analysis_level,
        work_dir=work_dir,
        participant_label=opts.participant_label,
        session_label=opts.session_label,
        bids_filters=filters,
        skip_bids_validation=opts.skip_bids_validation,
        no_reports=opts.no_reports,
        list_participants=opts.list_participants,
        verbosity=opts.verbosity,
        quiet=opts.quiet,
        run_uuid=run_uuid,
    )
    nipype = NipypeSettings(nprocs=opts.nprocs, omp_nthreads=opts.omp_nthreads, mem_gb=opts.mem_gb,
                            use_plugin=read_plugin_file(opts.use_plugin))  # fmt:skip
    workflow = WorkflowSettings(
        registration=opts.registration,
        allow_template_download=opts.allow_template_download,
        brain_extraction=opts.brain_extraction,
        field_of_view=opts.field_of_view,
        intensity_scale=opts.intensity_scale,
        stripped_n4_grid=opts.stripped_n4_grid,
        denoising=opts.denoising,
        contrast_standardisation=opts.contrast_standardisation,
        bias_correction=opts.bias_correction,
    )
    if opts.train_model and opts.analysis_level != "group":
        raise UsageError("--train-model is a group-level action")
    if opts.train_model and not opts.model_kind:
        raise UsageError("--train-model needs --model-kind")
    if opts.train_model and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", opts.train_model):
        raise UsageError(f"{opts.train_model}: a model name may hold letters, digits, '_.-' only")
    if opts.model_kind == "ensemble" and len(opts.ensemble_members) < 2:
        raise UsageError("--model-kind ensemble needs at least two --ensemble-members")
    if opts.model_kind == "unoise" and not opts.explain_model:
        raise UsageError("--model-kind unoise needs --explain-model BUNDLE")
    models = ModelSettings(
        models=opts.model or default_models(), train_model=opts.train_model,
        model_kind=opts.model_kind, ensemble_members=opts.ensemble_members,
        explain_model=opts.explain_model, cv_folds=opts.cv_folds,
        control_labels=opts.control_label, max_epochs=opts.max_epochs,
        tissue_scaling=opts.tissue_scaling,
    )  # fmt:skip
    if opts.bias_reference_query and opts.bias_reference not in ("auto", "controls"):
        raise UsageError("--bias-reference-query narrows the controls; use it with "
                         "--bias-reference controls (or auto)")  # fmt:skip
    statistics = StatisticsSettings(
        bias_reference=opts.bias_reference, bias_reference_query=opts.bias_reference_query,
        bias_form=opts.bias_form, include_failed_qc=opts.include_failed_qc,
        site_calibration=opts.site_calibration,
    )  # fmt:skip
    return Config(
        execution=execution, workflow=workflow, nipype=nipype, seeds=Seeds(master=opts.seed),
        models=models, statistics=statistics,
    )  # fmt:skip
