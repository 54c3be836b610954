"""Model bundles: a directory with ``model.json`` and weights that load without pickle.

- classical linear models and CNNs: ``weights.safetensors`` (numpy arrays / torch tensors);
- gradient boosting: ``model.skops``, loaded only after checking that it holds nothing but
  scikit-learn's tree predictors;
  (each kind's class in ``kinds`` says which, and how its state round-trips);
- ensembles: ``members/<name>/`` bundles, averaged.

Every file is listed in ``model.json`` with its SHA-256; a bundle whose files do not match is
refused (tampered or truncated), as is one made for another input contract.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path

import numpy as np

from .. import __version__
from ..preprocessing.conform import WORKING_VOXEL_MM
from .inputs import NORMALISATION, ContractError, ScanFeatures, check_contract, load_inputs
from .kinds import ENSEMBLE, KINDS, estimator_class, role_of

FORMAT = "bids_brainage-bundle"
FORMAT_VERSION = 1
DEFAULT_BUNDLE = "default"
# what the participant level runs without --model: global age, local maps, U-noise importance
DEFAULT_MODELS = (DEFAULT_BUNDLE, "default-local", "default-unoise")
# what a contract without the key means: bundles trained before the head grid kept the
# stored field of view, before log segmentation segmented the intensities, before the
# head-sized N4 grid estimated a stripped input's field on its own grid
CONTRACT_DEFAULTS = {"field_of_view": "stored", "intensity_scale": "linear",
                     "stripped_n4_grid": "brain", "denoising": "none",
                     "contrast_standardisation": "none", "bias_correction": "head"}  # fmt:skip
LOGGER = logging.getLogger("bids_brainage")


class BundleError(ValueError):
    """A bundle that cannot be used: missing, tampered, unknown format or wrong contract."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict:
    names = ("bids_brainage", "numpy", "scikit-learn", "torch", "safetensors", "skops", "antspyx")
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@dataclass
class Bundle:
    """A loaded bundle: its ``model.json`` and a ready estimator (or member bundles)."""

    path: Path
    card: dict
    estimator: object = None
    members: list[Bundle] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.card["name"]

    @property
    def kind(self) -> str:
        return self.card["kind"]

    def preprocessed_with(self, key: str) -> str:
        """A preprocessing choice its training scans were made with (a ``CONTRACT_DEFAULTS``
        key).
        """
        return self.card.get("contract", {}).get(key, CONTRACT_DEFAULTS[key])

    @property
    def field_of_view(self) -> str:
        """The field of view its training scans were processed on (``head`` or ``stored``)."""
        return self.preprocessed_with("field_of_view")

    @property
    def intensity_scale(self) -> str:
        """The scale its training scans were registered and segmented on (``linear``, ``log``)."""
        return self.preprocessed_with("intensity_scale")

    @property
    def halfwidth(self) -> float:
        return float(self.card["interval"]["halfwidth"])

    def inputs_needed(self) -> set[str]:
        if self.members:
            return set().union(*(m.inputs_needed() for m in self.members))
        return {self.estimator.input or self.card["contract"]["input"]}

    def torch_predict(self):
        """The bundle's age prediction as a differentiable torch function of its one input
        (N, C, X, Y, Z) → (N,): what U-noise trains against.
        """
        needed = self.inputs_needed()
        if len(needed) != 1 or "histogram" in needed:
            raise BundleError(f"{self.path}: U-noise needs one volume input, this {self.kind} "
                              f"bundle takes {sorted(needed)}")  # fmt:skip
        if self.members:
            functions = [m.torch_predict() for m in self.members]

            def average(x):
                return sum(f(x) for f in functions) / len(functions)

            return average
        if not self.estimator.differentiable:
            raise BundleError(f"{self.path}: a {self.kind} bundle is not differentiable; "
                              "U-noise cannot explain it")  # fmt:skip
        return self.estimator.torch_predict

    def predict_importance(self, features: ScanFeatures, brain: np.ndarray) -> np.ndarray:
        """U-noise importance map (1 - tolerated noise) of one scan (importance kinds only)."""
        (kind,) = self.inputs_needed()
        return self.estimator.importance(self.load_inputs(features, kind)[None], brain)[0]

    def predict_inputs(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Predicted ages from stacked inputs keyed by input kind (histogram/tissue/t1w)."""
        if self.members:
            return np.mean([m.predict_inputs(inputs) for m in self.members], axis=0)
        return np.asarray(self.estimator.predict(inputs[self.estimator.input]), float)

    def describe(self) -> dict:
        """What the prediction workflow needs to know of the bundle (it travels as a dict)."""
        data = self.card["training_data"]
        dataset = data["dataset"].get("Name", "unnamed data")
        described = {"path": str(self.path), "name": self.name, "kind": self.kind,
                     "data": f"{data['n_scans']} scans of {dataset}"}  # fmt:skip
        if role_of(self.kind) == "explainer":
            return {**described, "explains": self.card["explains"]["name"]}
        mae = self.card["cross_validation"]["random"]["metrics"]["mae"]["mean"]
        return {**described, "mae": mae}

    def check_contract(self, template: dict) -> None:
        """Refuse this bundle (and any member) if made for another template or grid."""
        try:
            check_contract(self.card.get("contract", {}), template, bundle=str(self.path))
        except ContractError as err:
            raise BundleError(str(err)) from None
        for member in self.members:
            member.check_contract(template)

    def predict_local(self, features: ScanFeatures) -> np.ndarray:
        """The local brain-age map of one scan on the template grid (local kinds only)."""
        return self.estimator.predict_maps(self.load_inputs(features, "tissue")[None])[0]

    def load_inputs(self, features: ScanFeatures, kind: str) -> np.ndarray:
        """One scan's input of ``kind`` as this bundle's contract reads it (grid, scaling)."""
        contract = self.card["contract"]
        return load_inputs(features, kind, contract.get("grid"),
                           contract.get("tissue_scaling", "none"))  # fmt:skip

    def predict_scan(self, features: ScanFeatures) -> float:
        if self.members:  # each member reads the inputs its own contract names
            return float(np.mean([m.predict_scan(features) for m in self.members]))
        inputs = {kind: self.load_inputs(features, kind)[None] for kind in self.inputs_needed()}
        return float(self.predict_inputs(inputs)[0])


def save_bundle(
    path: Path,
    card: dict,
    estimator=None,
    members: list[Path] | None = None,
    extras: dict[str, bytes] | None = None,
) -> Bundle:
    """Write a bundle directory (replacing one of the same path) and return it loaded.

    ``extras`` (model card, out-of-fold predictions, figures) are written beside the weights
    and, like them, listed with their checksums.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    card = {"format": FORMAT, "format_version": FORMAT_VERSION, **card,
            "libraries": library_versions(), "files": {}}  # fmt:skip
    card.setdefault("version", __version__)
    if card["kind"] == ENSEMBLE:
        for member in members or []:
            shutil.copytree(member, tmp / "members" / Path(member).name)
        card["members"] = [Path(m).name for m in members or []]
    else:
        state, card["params"] = estimator.state()
        _write_state(tmp, estimator.storage, state)
    for name, data in (extras or {}).items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
    for file in sorted(p for p in tmp.rglob("*") if p.is_file() and p.name != "model.json"):
        card["files"][file.relative_to(tmp).as_posix()] = sha256(file)
    (tmp / "model.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return load_bundle(path)


def load_bundle(path: Path, *, template: dict | None = None, threads: int = 1) -> Bundle:
    """Load a bundle, checking format, checksums and (given ``template``) the input contract."""
    path = Path(path)
    card_file = path / "model.json"
    if not card_file.is_file():
        raise BundleError(f"{path}: not a model bundle (no model.json)")
    try:
        card = json.loads(card_file.read_text())
    except ValueError as err:
        raise BundleError(f"{card_file}: not valid JSON ({err})") from None
    if card.get("format") != FORMAT or card.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{card_file}: not a {FORMAT} version {FORMAT_VERSION} bundle")
    if card.get("kind") not in KINDS:
        raise BundleError(f"{card_file}: unknown model kind {card.get('kind')!r}")
    for name, digest in card.get("files", {}).items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"{file}: listed in model.json but missing")
        if sha256(file) != digest:
            raise BundleError(f"{file}: checksum differs from model.json (modified or corrupt)")
    if template is not None:
        Bundle(path, card).check_contract(template)
    if card["kind"] == ENSEMBLE:
        members = [load_bundle(path / "members" / m, template=template, threads=threads)
                   for m in card["members"]]  # fmt:skip
        if not members:
            raise BundleError(f"{card_file}: an ensemble without members")
        return Bundle(path, card, members=members)
    cls = estimator_class(card["kind"])
    file, state = _read_state(path, cls.storage)
    try:
        estimator = cls.from_state(state, card.get("params", {}), threads=threads)
    except ValueError as err:
        raise BundleError(f"{file}: {err}") from None
    return Bundle(path, card, estimator)


STATE_FILES = {"numpy": "weights.safetensors", "torch": "weights.safetensors",
               "skops": "model.skops"}  # fmt:skip


def _write_state(folder: Path, storage: str, state) -> None:
    file = folder / STATE_FILES[storage]
    if storage == "skops":
        file.write_bytes(state)
    elif storage == "torch":
        from safetensors.torch import save_file

        save_file(state, str(file))
    else:
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(file))


def _read_state(folder: Path, storage: str):
    file = folder / STATE_FILES[storage]
    if storage == "skops":
        return file, file.read_bytes()
    if storage == "torch":
        from safetensors.torch import load_file
    else:
        from safetensors.numpy import load_file
    return file, load_file(str(file))


def load_selected_bundles(specs: list[str]) -> list[Bundle]:
    """The ``--model`` bundles, loaded and checksummed once; ``none`` means preprocessing only."""
    if [s.lower() for s in specs] == ["none"]:
        return []
    bundles = [load_bundle(resolve_bundle(spec)) for spec in specs]
    names = [b.name for b in bundles]
    if len(set(names)) != len(names):
        raise BundleError(f"two --model bundles share a name: {names}")
    if bundles and all(role_of(b.kind) == "explainer" for b in bundles):
        raise BundleError(f"--model {' '.join(specs)}: only importance models; add a bundle "
                          "that predicts brain age")  # fmt:skip
    for key in CONTRACT_DEFAULTS:  # the first bundle decides; the others' predictions are flagged
        first = bundles[0].preprocessed_with(key) if bundles else None
        unlike = [b.name for b in bundles if b.preprocessed_with(key) != first]
        if unlike:
            LOGGER.warning("%s expect(s) another %s than %s (%s): their predictions are flagged "
                           "%s_unlike_training", ", ".join(unlike), key, bundles[0].name, first,
                           key)  # fmt:skip
    templates = {b.card["contract"]["template"] for b in bundles}
    if len(templates) > 1:
        raise BundleError(f"the --model bundles were trained on different templates: {templates}")
    return bundles


def packaged_bundles() -> dict[str, Path]:
    """Bundles shipped inside the package, by name."""
    root = Path(str(resources.files("bids_brainage"))) / "data" / "models"
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "model.json").is_file()}


def default_models() -> list[str]:
    """The packaged bundles of ``DEFAULT_MODELS`` that this installation holds."""
    packaged = packaged_bundles()
    return [name for name in DEFAULT_MODELS if name in packaged]


def resolve_bundle(spec: str) -> Path:
    """``--model`` value → bundle directory: a path, or the name of a packaged bundle."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    packaged = packaged_bundles()
    if spec in packaged:
        return packaged[spec]
    known = ", ".join(packaged) or "none"
    raise BundleError(f"{spec}: no such bundle directory, nor a packaged bundle ({known})")


def _input_of(kind: str) -> str:
    return "mixed" if kind == ENSEMBLE else estimator_class(kind).input


def contract_for(template: dict, kind: str, grid: dict | None, input_kind: str | None = None,
                 brain_extraction: str | None = None, field_of_view: str | None = None,
                 tissue_scaling: str | None = None,
                 intensity_scale: str | None = None,
                 stripped_n4_grid: str | None = None,
                 denoising: str | None = None,
                 contrast_standardisation: str | None = None,
                 bias_correction: str | None = None) -> dict:  # fmt:skip
    contract = {"template": template["name"], "resolution": int(template["resolution"]),
                "normalisation": NORMALISATION, "working_voxel_mm": WORKING_VOXEL_MM,
                "input": input_kind or _input_of(kind)}  # fmt:skip
    if brain_extraction is not None:
        contract["brain_extraction"] = brain_extraction
    if field_of_view is not None:
        contract["field_of_view"] = field_of_view
    if intensity_scale is not None:
        contract["intensity_scale"] = intensity_scale
    if stripped_n4_grid is not None:
        contract["stripped_n4_grid"] = stripped_n4_grid
    if denoising is not None:
        contract["denoising"] = denoising
    if contrast_standardisation is not None:
        contract["contrast_standardisation"] = contrast_standardisation
    if bias_correction is not None:
        contract["bias_correction"] = bias_correction
    if tissue_scaling is not None:
        contract["tissue_scaling"] = tissue_scaling
    if grid is not None:
        contract["grid"] = grid
    return contract
