"""The model-kind registry: each bundle kind's estimator class, and the plan of bundle roles.

An estimator class declares what the rest of the package needs to know of its kind:

- ``kind``: the name in ``model.json``;
- ``input``: the features it reads (``histogram``, ``tissue`` or ``t1w``; an explainer reads
  the input of the bundle it explains);
- ``role``: ``global`` (one age per scan), ``local`` (a voxel-wise age map, and its mean as the
  global age) or ``explainer`` (an importance map of another bundle, no age);
- ``differentiable`` (U-noise can explain it) and ``volume_input`` (occlusion can explain it);
- ``storage`` and ``state()`` / ``from_state(state, params, threads)``: how its fitted state
  is saved without pickle (``numpy`` or ``torch`` safetensors, or ``skops`` bytes).

Classes are imported on first use, so that asking about a classical kind never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module

ENSEMBLE = "ensemble"  # members' ages averaged; no estimator class of its own
_CLASSES = {
    "hist-linear": "classical:HistogramLinear",
    "hist-gbm": "classical:HistogramBoosting",
    "tissue-linear": "classical:TissueLinear",
    "tissue-gpr": "gpr:TissueGPR",
    "slice-cnn": "deep:SliceCNNAge",
    "resnet3d": "deep:ResNet3dAge",
    "resnet2d-lstm": "deep:ResNet2dLSTMAge",
    "local-unet": "local:LocalAgeModel",
    "unoise": "unoise:UNoise",
}
KINDS = (*_CLASSES, ENSEMBLE)


def estimator_class(kind: str) -> type:
    """The estimator class of a kind (not for ensembles)."""
    if kind not in _CLASSES:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    module, name = _CLASSES[kind].split(":")
    return getattr(import_module(f"{__package__}.{module}"), name)


def make_estimator(kind: str, *, affine=None, settings: dict | None = None, threads: int = 2,
                   random_state: int = 0):  # fmt:skip
    """A fresh, unfitted estimator of a kind; ``affine`` is the grid of its training inputs."""
    return estimator_class(kind).for_grid(affine, settings=settings, threads=threads,
                                          random_state=random_state)  # fmt:skip


def role_of(kind: str) -> str:
    return "global" if kind == ENSEMBLE else estimator_class(kind).role


def occludable(kind: str) -> bool:
    """A global kind with a volume input: occlusion maps explain it (ensembles are not drawn)."""
    if kind == ENSEMBLE:
        return False
    cls = estimator_class(kind)
    return cls.role == "global" and cls.volume_input


@dataclass(frozen=True)
class BundlePlan:
    """Which selected bundle does what in the participant graph, decided once by the CLI.

    Each bundle travels as a plain dict (``path``, ``name``, ``kind``, and ``mae`` or
    ``explains``). ``age``: every bundle with an age of its own; ``local``: the first local
    kind (its maps); ``occlusion``: the first occludable bundle (its occlusion map);
    ``unoise``: the first explainer (its U-noise map).
    """

    age: list[dict] = field(default_factory=list)
    local: dict | None = None
    occlusion: dict | None = None
    unoise: dict | None = None

    @classmethod
    def of(cls, bundles: list[dict]) -> BundlePlan:
        roles = {b["name"]: role_of(b["kind"]) for b in bundles}
        age = [b for b in bundles if roles[b["name"]] != "explainer"]
        first = lambda chosen: next(iter(chosen), None)  # noqa: E731
        return cls(
            age=age,
            local=first(b for b in bundles if roles[b["name"]] == "local"),
            occlusion=first(b for b in age if occludable(b["kind"])),
            unoise=first(b for b in bundles if roles[b["name"]] == "explainer"),
        )

    def __bool__(self) -> bool:
        return bool(self.age)
