"""One run-wide configuration, filled by the command line and passed to every workflow.

Sections follow fMRIPrep's ``config.py`` (execution, workflow, nipype, seeds) but are plain
dataclasses handed around explicitly, so that tests can build several configs in one process.
"""

from __future__ import annotations

import json
import os
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .models.kinds import BundlePlan
from .preprocessing.conform import ConformLimits


@dataclass
class ExecutionSettings:
    """Where the run reads and writes, and what it selects."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    work_dir: Path
    participant_label: list[str] | None = None
    session_label: list[str] | None = None
    bids_filters: dict = field(default_factory=dict)
    skip_bids_validation: bool = False
    no_reports: bool = False
    list_participants: bool = False
    verbosity: int = 0
    quiet: bool = False
    run_uuid: str = ""

    @property
    def log_dir(self) -> Path:
        return self.output_dir / "logs"


# The preprocessing "auto" gives when no bundle decides (--model none: what new bundles are
# trained on); a bundle's contract without the key means its CONTRACT_DEFAULTS (models/bundle.py).
# It is the packaged default's: the recipe the invariance benchmark and held-out scans validated.
NEW_PREPROCESSING = {"field_of_view": "head", "intensity_scale": "linear",
                     "stripped_n4_grid": "head", "denoising": "none",
                     "contrast_standardisation": "none", "bias_correction": "brain"}  # fmt:skip


def bias_correction_with(contrast_standardisation: str, resolved: str, chosen: bool) -> str:
    """The contrast step runs its own N4 on the head: with it, a bias correction left to
    "auto" is "head" whatever the bundle or new bundles use (both chosen are refused).
    """
    return "head" if contrast_standardisation == "power" and not chosen else resolved


@dataclass
class WorkflowSettings:
    """Choices that change what the pipeline computes."""

    limits: ConformLimits = field(default_factory=ConformLimits)  # one place: conform.py
    registration: str = "fast"
    brain_extraction: str = "deepbet"  # or "template"
    # "head": each scan on its head's grid, registration from the brains' centres of mass;
    # "stored": the stored field of view (what bundles trained before it expect); "auto":
    # the selected bundles' contracts decide, at run time
    field_of_view: str = "auto"
    # "linear": registration and Atropos on the intensities (what bundles trained before it
    # expect); "log": on their log, blind to a power-law change of contrast; "auto": contracts
    intensity_scale: str = "auto"
    # a skull-stripped input's N4 field: "brain" on its own grid (what bundles trained before
    # it expect), "head" on the grid a head would have; "auto": the bundles' contracts
    stripped_n4_grid: str = "auto"
    # "rician": denoise before N4 (ANTs non-local means); "none": not (what bundles trained
    # before it expect); "auto": the bundles' contracts
    denoising: str = "auto"
    # "power": the image raised to the power that sets its GM/WM ratio, then N4 again; "none":
    # not (what bundles trained before it expect); "auto": the bundles' contracts
    contrast_standardisation: str = "auto"
    # "brain": N4 again inside the brain mask on a head-sized grid around it, so a head and its
    # brain given skull-stripped take one path; "head": not (what bundles trained before it
    # expect); "auto": the bundles' contracts
    bias_correction: str = "auto"
    allow_template_download: bool = False
    template: dict = field(default_factory=dict)  # Template.to_dict(), resolved at run time

    def conform_limits(self) -> dict:
        return asdict(self.limits)


DEFAULT_CONTROL_LABELS = ("HC", "control", "controls", "CN", "NC", "healthy")
MIN_BIAS_CONTROLS = 10  # below this, --bias-reference auto falls back to the bundle's own set


@dataclass
class ModelSettings:
    """Which bundles predict at participant level, and what the group level trains."""

    models: list[str] = field(default_factory=lambda: ["default"])
    train_model: str | None = None
    model_kind: str | None = None
    ensemble_members: list[str] = field(default_factory=list)
    explain_model: str | None = None  # the bundle a unoise model explains
    cv_folds: int = 5
    control_labels: list[str] = field(default_factory=lambda: list(DEFAULT_CONTROL_LABELS))
    max_epochs: int | None = None
    tissue_scaling: str = "tiv"  # GM/WM maps of new tissue bundles scaled by TIV (or "none")
    plan: BundlePlan = field(default_factory=BundlePlan)  # the --model bundles' roles, at run time
    atlas: dict | None = None  # Harvard-Oxford labels on the template, when local maps are made


@dataclass
class NipypeSettings:
    """Resources; they never change results, so they never invalidate caches."""

    nprocs: int = 1
    omp_nthreads: int = 1
    mem_gb: float | None = None
    use_plugin: dict | None = None  # --use-plugin: {"plugin": ..., "plugin_args": {...}}

    def limit_threads(self) -> None:
        """Cap the threads of every library in this process and the node processes it starts."""
        threads = str(self.omp_nthreads)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                     "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):  # fmt:skip
            os.environ[name] = threads

    @property
    def plugin(self) -> str:
        if self.use_plugin:
            return self.use_plugin["plugin"]
        return "MultiProc" if self.nprocs > 1 else "Linear"

    @property
    def batch_plugin(self) -> bool:
        """A scheduler plugin: every node is a job (SLURM, SGE, PBS and their Graph forms)."""
        return self.plugin not in ("MultiProc", "Linear")

    @property
    def plugin_args(self) -> dict:
        if self.use_plugin:
            args = dict(self.use_plugin["plugin_args"])
            if self.plugin == "MultiProc":
                args.setdefault("n_procs", self.nprocs)
            if self.plugin.endswith("Graph"):  # an empty mapping fails in Nipype
                args.setdefault("dont_resubmit_completed_jobs", True)
            return args
        if self.plugin == "Linear":
            return {}
        args = {"n_procs": self.nprocs, "raise_insufficient": False}
        if self.mem_gb:
            args["memory_gb"] = self.mem_gb
        return args


@dataclass
class Seeds:
    """One master seed from which every library's seed is derived."""

    master: int = 20181209

    def derive(self, name: str) -> int:
        """A stable per-purpose seed (same master and name give the same seed)."""
        rng = np.random.default_rng([self.master, *name.encode()])
        return int(rng.integers(1, 2**31 - 1))

    @property
    def numpy(self) -> int:
        return self.derive("numpy")

    @property
    def torch(self) -> int:
        return self.derive("torch")

    @property
    def ants(self) -> int:
        return self.derive("ants")

    def apply(self) -> None:
        """Seed the global generators of this process."""
        random.seed(self.derive("python"))
        np.random.seed(self.numpy % 2**32)  # noqa: NPY002 - for libraries using the global RNG
        os.environ["ANTS_RANDOM_SEED"] = str(self.ants)
        # Importing torch costs seconds; steps that use it seed it themselves from ``torch``.
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.manual_seed(self.torch)


@dataclass
class StatisticsSettings:
    """How the group level corrects age bias and which scans it keeps."""

    bias_reference: str = "auto"  # auto, controls, bundle, all, or a TSV path
    bias_reference_query: str | None = None
    bias_form: str = "age"  # seed 002 Eq. 6-7 ("age") or Eq. 8 ("predicted")
    include_failed_qc: bool = False
    site_calibration: str = "auto"  # auto: per-site correction where >= 20 controls; off


@dataclass
class Config:
    """The whole run's settings."""

    execution: ExecutionSettings
    workflow: WorkflowSettings = field(default_factory=WorkflowSettings)
    nipype: NipypeSettings = field(default_factory=NipypeSettings)
    seeds: Seeds = field(default_factory=Seeds)
    models: ModelSettings = field(default_factory=ModelSettings)
    statistics: StatisticsSettings = field(default_factory=StatisticsSettings)

    def to_dict(self) -> dict:
        def _plain(value):
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, dict):
                return {k: _plain(v) for k, v in value.items()}
            if isinstance(value, list):
                return [_plain(v) for v in value]
            return value

        return _plain(asdict(self))

    def dump(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path
