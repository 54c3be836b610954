"""Group-level training: ``group --train-model NAME --model-kind KIND``.

Reads participant-level derivatives only. Trains on participants with an age (controls only
when participants.tsv has a group column), reports random-split and site-split
cross-validation side by side, refits on everyone and writes the bundle into
OUTPUT_DIR/models/NAME with its model card, out-of-fold predictions and figures.
"""

from __future__ import annotations

import io
import json
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone

from .. import __version__
from ..config import ModelSettings
from ..models.bundle import (
    BundleError,
    contract_for,
    load_bundle,
    resolve_bundle,
    save_bundle,
    sha256,
)
from ..models.inputs import ContractError, ScanFeatures, grid_signature, load_inputs
from ..models.kinds import ENSEMBLE, estimator_class, make_estimator
from ..models.local import LOCAL_DEFAULTS, LocalErrors
from ..models.metrics import conformal_halfwidth
from ..models.training import (
    COVERAGE,
    LEARNING_FRACTIONS,
    NETWORK_LEARNING_FRACTIONS,
    cross_validate,
    first_rows,
    fold_nuisance,
    oof_table,
    summarise_split,
)
from ..preprocessing.qc import UNTRUSTWORTHY_FLAGS
from ..reports.model_card import model_card_markdown, model_figures

LOGGER = logging.getLogger("bids_brainage")
MIN_TRAINING_SCANS = 10
NUISANCE_METHODS = {
    "augment": "augmentation: nuisance copies of training scans are trained on with their "
               "source's age (never scored; in cross-validation only the copies of each fold's "
               "own training participants)",
    "project": "external parameter orthogonalisation: the leading directions of copy − "
               "original differences are projected out before the fit",
}  # fmt:skip
VALIDATION_FRACTION = 0.15  # U-noise's held-out scans (seed 003: 10 % validation)


@dataclass
class TrainingRun:
    """What training needs of the run: the model settings, where bundles go, a seed, threads."""

    settings: ModelSettings
    output_dir: Path
    seed: int
    threads: int = 1
    # scan table of nuisance copies of training scans, with a source_participant column
    nuisance: pd.DataFrame | None = None

    @property
    def target(self) -> Path:
        return self.output_dir / "models" / self.settings.train_model


class TrainingError(ValueError):
    """Training cannot go on; the message says why in one line."""


def select_training_scans(table: pd.DataFrame, control_labels) -> tuple[pd.DataFrame, dict]:
    """Scans with an age, trustworthy QC and (when groups are given) a control label."""
    excluded = {}
    keep = table["age"].notna()
    excluded["no age"] = int((~keep).sum())
    flagged = (
        table["qc_flags"]
        .fillna("")
        .map(lambda f: bool(UNTRUSTWORTHY_FLAGS & set(filter(None, f.split(",")))))
    )
    excluded["QC flags"] = int((keep & flagged).sum())
    keep &= ~flagged
    if table["group"].notna().any():
        labels = {str(label).lower() for label in control_labels}
        control = table["group"].fillna("").astype(str).str.lower().isin(labels)
        excluded["not a control"] = int((keep & ~control).sum())
        keep &= control
    return table[keep].reset_index(drop=True), {k: v for k, v in excluded.items() if v}


def contrast_range(peak_ratios, cnr=()) -> dict:
    """The training scans' GM/WM intensity-peak ratios and GM/WM contrast-to-noise ratios: a
    prediction well outside the first range is flagged ``contrast_outside_training_range``,
    one well below the second ``contrast_to_noise_below_training_range``. Measures nobody
    measured are left out (an empty dict when none was).
    """
    ranges = {}
    for name, measured in (("gm_wm_peak_ratio", peak_ratios), ("cnr_gm_wm", cnr)):
        values = pd.to_numeric(pd.Series(measured, dtype=object), errors="coerce").dropna()
        if not values.empty:
            ranges[name] = {"min": float(values.min()), "max": float(values.max()),
                            "median": float(values.median()), "n": int(len(values))}  # fmt:skip
    return ranges


def training_summary(scans: pd.DataFrame, excluded: dict, dataset: dict, selection: str) -> dict:
    age = scans["age"].astype(float)
    contrast = contrast_range(scans.get("gm_wm_peak_ratio", ()), scans.get("cnr_gm_wm", ()))
    return {
        "dataset": {k: dataset.get(k) for k in ("Name", "License", "Acknowledgements",
                                                "HowToAcknowledge") if dataset.get(k)},
        "n_scans": int(len(scans)),
        "n_participants": int(scans["participant_id"].nunique()),
        "age": {"min": float(age.min()), "max": float(age.max()), "mean": float(age.mean()),
                "median": float(age.median()), "sd": float(age.std())},
        "sex": {str(k): int(v) for k, v in scans["sex"].fillna("n/a").value_counts().items()},
        "sites": {str(k): int(v) for k, v in scans["site"].value_counts().items()},
        "selection": selection,
        "excluded": excluded,
        **({"contrast": contrast} if contrast else {}),
    }  # fmt:skip


def load_design(scans: pd.DataFrame, input_kind: str, scaling: str = "none"):
    """Stack the model inputs (histogram / tissue / t1w) of every scan, tissue maps scaled as
    ``scaling`` says; the grid of template-space inputs is checked to be the same for all.
    Returns the inputs, the grid signature and affine (None for histograms).
    """
    arrays, grid, affine = [], None, None
    for row in scans.itertuples():
        features = ScanFeatures(**row.derivatives.model_inputs())
        if input_kind != "histogram" and grid is None:
            import nibabel as nib

            path = features.t1w if input_kind == "t1w" else features.tissue["GM"]
            if path.exists():
                image = nib.load(str(path))
                grid, affine = grid_signature(image), image.affine
        arrays.append(load_inputs(features, input_kind, grid, scaling))
    return np.stack(arrays), grid, affine


def template_of(scans: pd.DataFrame) -> dict:
    pairs = {(d.template, d.resolution) for d in scans["derivatives"]}
    if len(pairs) != 1:
        raise TrainingError(f"the scans were preprocessed on different templates: {sorted(pairs)}")
    name, resolution = pairs.pop()
    return {"name": name, "resolution": int(resolution)}


PREPROCESSING = {  # contract key: (default of older derivatives, what to rerun)
    "brain_extraction": ("template", "with one --brain-extraction"),
    "field_of_view": ("stored", "with this version"),
    "intensity_scale": ("linear", "with one --intensity-scale"),
    "stripped_n4_grid": ("brain", "with one --stripped-n4-grid"),
    "denoising": ("none", "with one --denoising"),
    "contrast_standardisation": ("none", "with one --contrast-standardisation"),
    "bias_correction": ("head", "with one --bias-correction"),
}


def preprocessing_of(scans: pd.DataFrame) -> dict:
    """The one brain extraction, field of view, intensity scale and stripped-input N4 grid of the
    training scans (the model learns what they produce); mixed ones are refused.
    """
    found = {}
    for key, (default, rerun) in PREPROCESSING.items():
        values = set(scans[key]) if key in scans else {default}
        if len(values) != 1:
            raise TrainingError(f"the scans were preprocessed with different {key}: "
                                f"{sorted(values)}; rerun the participant level "
                                f"{rerun}")  # fmt:skip
        found[key] = values.pop()
    return found


def nuisance_differences(copies: pd.DataFrame, scans: pd.DataFrame, X, input_kind: str,
                         scaling: str = "none"):  # fmt:skip
    """Copy − original inputs for every usable copy whose source is a training scan (its
    first scan), with the source participants; None when no copy qualifies.
    """
    first = first_rows(scans["participant_id"])
    usable, _ = select_training_scans(copies.assign(group=None), ())
    usable = usable[usable["source_participant"].isin(first)].reset_index(drop=True)
    if usable.empty:
        return None
    copies_X, _, _ = load_design(usable, input_kind, scaling)
    if copies_X.shape[1:] != X.shape[1:]:
        raise TrainingError(f"the nuisance copies' inputs {copies_X.shape[1:]} are unlike the "
                            f"training scans' {X.shape[1:]}")  # fmt:skip
    sources = usable["source_participant"].to_numpy()
    copies_X -= X[[first[s] for s in sources]]
    return copies_X, sources


def run_training(run: TrainingRun, table: pd.DataFrame, dataset: dict) -> Path:
    """Cross-validate, refit and write the bundle; return its folder."""
    settings, seed = run.settings, run.seed
    kind, name = settings.model_kind, settings.train_model
    scans, excluded = select_training_scans(table, settings.control_labels)
    if len(scans) < MIN_TRAINING_SCANS:
        raise TrainingError(f"{len(scans)} scans usable for training (excluded: {excluded}); "
                            f"at least {MIN_TRAINING_SCANS} are needed")  # fmt:skip
    template = template_of(scans)
    participants, sites, y = scans["participant_id"], scans["site"], scans["age"].to_numpy(float)
    splits = ["random"] + (["site"] if sites.nunique() > 1 else [])
    site_note = None if "site" in splits else (
        f"All training scans come from one site ({sites.iloc[0]}): no site-split "
        "cross-validation is possible, and the random-split figures say nothing about "
        "accuracy on other scanners (seed 000).")  # fmt:skip
    selection = ("participants with an age and no untrustworthy QC flag"
                 + (f", group in {settings.control_labels}" if table["group"].notna().any()
                    else ""))  # fmt:skip
    card = {"name": name, "kind": kind,
            "training_data": training_summary(scans, excluded, dataset, selection),
            "seed": seed, "site_split_note": site_note}  # fmt:skip
    LOGGER.warning("training %s (%s) on %d scans; %s cross-validation", name, kind, len(scans),
                   " and ".join(splits))  # fmt:skip
    if kind == ENSEMBLE:
        return _train_ensemble(run, scans, card, splits, template)
    cls = estimator_class(kind)
    if cls.role == "explainer":
        return _train_unoise(run, scans, card, template)

    scaling = settings.tissue_scaling if cls.input == "tissue" else None
    X, grid, affine = load_design(scans, cls.input, scaling or "none")
    overrides = {"epochs": settings.max_epochs} if settings.max_epochs else {}
    model = make_estimator(kind, affine=affine, settings=overrides, threads=run.threads,
                           random_state=seed)  # fmt:skip
    networks = cls.storage == "torch" and cls.role == "global"  # the CNN kinds
    fractions = NETWORK_LEARNING_FRACTIONS if networks else LEARNING_FRACTIONS
    local_errors = None
    if cls.role == "local":  # one fit per fold costs minutes: no learning curve
        fractions = (1.0,)
        local_errors = LocalErrors(X, y, X.sum(axis=1).mean(axis=0) > LOCAL_DEFAULTS[
            "mask_threshold"])  # fmt:skip
    nuisance = None
    if run.nuisance is not None and getattr(cls, "learns_nuisance", False):
        nuisance = nuisance_differences(run.nuisance, scans, X, cls.input, scaling or "none")
        if nuisance is not None:
            card["nuisance_training"] = {
                "method": NUISANCE_METHODS[model.nuisance_use],
                "copies": int(len(nuisance[1])),
                "source_participants": sorted(set(nuisance[1]))}  # fmt:skip
            if model.nuisance_use == "project":
                card["nuisance_training"]["energy"] = model.nuisance_energy
    results = {}
    for split in splits:
        results[split] = cross_validate(
            model, X, y, participants, sites, split=split, n_splits=settings.cv_folds,
            seed=seed, fractions=fractions if split == "random" else (1.0,),
            on_fold=local_errors if split == "random" else None,
            nuisance=nuisance)  # fmt:skip
        LOGGER.warning("%s split: MAE %.2f ± %.2f years over %d folds", split,
                       results[split]["metrics"]["mae"]["mean"],
                       results[split]["metrics"]["mae"]["sd"], results[split]["folds"])  # fmt:skip
    estimator = clone(model).fit(X, y, **fold_nuisance(nuisance, participants,
                                                        np.arange(len(X))))  # fmt:skip
    if nuisance and model.nuisance_use == "project":
        card["nuisance_training"]["components"] = estimator.nuisance_components_
    card["contract"] = contract_for(template, kind, grid, tissue_scaling=scaling,
                                    **preprocessing_of(scans))  # fmt:skip
    if hasattr(estimator, "curve_"):
        card["selection_curve"] = {str(k): v for k, v in estimator.curve_.items()}
    if networks:
        card["final_fit"] = {"epochs_run": len(estimator.history_),
                             "validation_mae": estimator.validation_["mae"]}  # fmt:skip
    extras = {}
    if local_errors is not None:
        card["local_cross_validation"] = {"split": "random", **local_errors.summary()}
        extras = local_error_files(local_errors, affine)
    return _write(run, scans, card, results, estimator=estimator, extras=extras)


def local_error_files(errors, affine) -> dict[str, bytes]:
    """The out-of-fold voxel-level MAE map as NIfTI and a figure, for the bundle."""
    import nibabel as nib

    from ..reports.model_card import voxel_map_figure
    from ..stats.voxelwise import unmask

    volume = unmask(errors.voxel_mae(), errors.mask)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "voxel_mae.nii.gz"
        nib.Nifti1Image(volume, affine).to_filename(path)
        figure = voxel_map_figure(volume, errors.mask, "Out-of-fold voxel-level MAE (years)",
                                  Path(tmp) / "voxel_mae.png")  # fmt:skip
        return {"voxel_mae.nii.gz": path.read_bytes(),
                "figures/voxel_mae.png": figure.read_bytes()}  # fmt:skip


def _train_ensemble(run: TrainingRun, scans, card, splits, template) -> Path:
    """Average member bundles; the cross-validation averages their out-of-fold predictions,
    which is exact only for members trained on the same scans with the same seed (checked).
    """
    members = [load_bundle(resolve_bundle(m)) for m in run.settings.ensemble_members]
    tables = []
    for member in members:
        file = member.path / "oof_predictions.tsv"
        if not file.exists():
            raise TrainingError(
                f"{member.path}: no oof_predictions.tsv; train it with this version"
            )
        tables.append(pd.read_csv(file, sep="\t", dtype={"session_id": str, "run": str}))
    keys = ["split", "participant_id", "session_id", "run", "fold"]
    reference = tables[0][keys].fillna("n/a")
    for member, oof in zip(members[1:], tables[1:], strict=True):
        if not oof[keys].fillna("n/a").equals(reference):
            raise TrainingError(
                f"{member.path}: trained on other scans, folds or seed than "
                f"{members[0].path}; an ensemble needs identical folds"
            )
    mean_prediction = np.mean([t["predicted_age"].to_numpy(float) for t in tables], axis=0)
    results = {}
    for split in dict.fromkeys(tables[0]["split"]):
        rows = (tables[0]["split"] == split).to_numpy()
        part = tables[0][rows]
        results[split] = {**summarise_split(part["age"].to_numpy(float), mean_prediction[rows],
                                            part["fold"].to_numpy(), split),
                          "learning_curve": {}}  # fmt:skip
    scans_oof = tables[0][tables[0]["split"] == "random"]
    if len(scans_oof) != len(scans) or set(scans_oof["participant_id"]) != set(
        scans["participant_id"]
    ):
        raise TrainingError("the ensemble members were trained on other scans than selected here")
    scans = scans_oof[["participant_id", "session_id", "run", "site", "age"]].reset_index(
        drop=True
    )
    contracts = {json.dumps({k: v for k, v in m.card["contract"].items() if k in
                             ("template", "resolution", "normalisation", "working_voxel_mm",
                              *PREPROCESSING)},
                            sort_keys=True)
                 for m in members}  # fmt:skip
    if len(contracts) != 1:
        raise TrainingError(
            "the ensemble members were made for different templates or brain extractions"
        )
    card["contract"] = {**json.loads(contracts.pop()), "input": "mixed"}
    card["members_kinds"] = {m.name: m.kind for m in members}
    return _write(run, scans, card, results, members=[m.path for m in members])


def _train_unoise(run: TrainingRun, scans, card, template) -> Path:
    """Seed 003's noise model for a frozen bundle (``--explain-model``): fitted on 85 % of the
    scans, the frozen model's MAE with and without the learnt noise reported on the other 15 %.
    """
    from ..models.unoise import UNOISE_DEFAULTS, UNoise
    from ..reports.model_card import unoise_card_markdown, voxel_map_figure

    settings = run.settings
    if not settings.explain_model:
        raise TrainingError("--model-kind unoise needs --explain-model BUNDLE")
    try:
        explained = load_bundle(resolve_bundle(settings.explain_model), template=template)
        predictor = explained.torch_predict()
    except BundleError as err:
        raise TrainingError(str(err)) from None
    (input_kind,) = explained.inputs_needed()
    scaling = explained.card["contract"].get("tissue_scaling")  # read as the explained model does
    X, grid, affine = load_design(scans, input_kind, scaling or "none")
    y = scans["age"].to_numpy(float)
    order = np.random.default_rng(card["seed"]).permutation(len(y))
    held = max(2, round(VALIDATION_FRACTION * len(y)))
    validation, train = np.sort(order[:held]), np.sort(order[held:])
    voxel_mm = float(abs(np.asarray(affine)[0, 0]))
    threads = run.threads
    steps = {}
    if settings.max_epochs:  # epochs of the training scans, autoencoder a quarter of them
        per_epoch = math.ceil(len(train) / UNOISE_DEFAULTS["batch_size"])
        steps = {"steps": settings.max_epochs * per_epoch,
                 "pretrain_steps": max(1, settings.max_epochs * per_epoch // 4)}  # fmt:skip
    model = UNoise(steps, voxel_mm=voxel_mm, threads=threads, random_state=card["seed"])
    for parameter in _frozen(explained):
        parameter.requires_grad_(False)
    model.fit(X[train], y[train], predictor)
    card["explains"] = {"name": explained.name, "kind": explained.kind,
                        "model_json_sha256": sha256(explained.path / "model.json")}  # fmt:skip
    card["validation"] = {"scans": int(held), "train_scans": int(len(train)),
                          **model.noisy_error(X[validation], y[validation], predictor,
                                              seed=card["seed"])}  # fmt:skip
    seen = explained.path / "oof_predictions.tsv"
    if seen.exists():  # the frozen model's own training scans: its clean MAE is then in-sample
        trained_on = set(pd.read_csv(seen, sep="\t")["participant_id"])
        card["validation"]["seen_by_explained_model"] = int(
            scans["participant_id"].iloc[validation].isin(trained_on).sum()
        )
    card["history"] = model.history_
    card["params"] = model.state()[1]
    card["contract"] = contract_for(template, "unoise", grid, input_kind,
                                    tissue_scaling=scaling, **preprocessing_of(scans))  # fmt:skip
    card["version"] = __version__
    brain = X[validation].sum(axis=1) > model.params_["mask_threshold"]
    mean_importance = model.importance(X[validation], brain).mean(axis=0)
    with tempfile.TemporaryDirectory() as tmp:
        import nibabel as nib

        path = Path(tmp) / "mean_importance.nii.gz"
        nib.Nifti1Image(mean_importance, affine).to_filename(path)
        figure = voxel_map_figure(mean_importance, brain.any(axis=0),
                                  "Mean U-noise importance (1 - tolerated noise), validation",
                                  Path(tmp) / "mean_importance.png")  # fmt:skip
        extras = {"mean_importance.nii.gz": path.read_bytes(),
                  "figures/mean_importance.png": figure.read_bytes()}  # fmt:skip
    extras["model_card.md"] = unoise_card_markdown(card).encode()
    target = run.target
    try:
        return save_bundle(target, card, estimator=model, extras=extras).path
    except (BundleError, ContractError) as err:
        raise TrainingError(str(err)) from None


def _frozen(bundle):
    """The torch parameters of a bundle (and its members), to be frozen."""
    network = getattr(bundle.estimator, "network_", None)
    own = list(network.parameters()) if network is not None else []
    return own + [p for member in bundle.members for p in _frozen(member)]


def _write(run: TrainingRun, scans, card, results, *, estimator=None, members=None,
           extras=None) -> Path:  # fmt:skip
    card["version"] = __version__
    calibration = "site" if "site" in results else "random"
    residuals = results[calibration]["predicted"] - scans["age"].to_numpy(float)
    card["interval"] = {"coverage": COVERAGE, "calibration": calibration,
                        "halfwidth": conformal_halfwidth(residuals, COVERAGE),
                        "method": "split-conformal on out-of-fold absolute errors"}  # fmt:skip
    if not math.isfinite(card["interval"]["halfwidth"]):
        raise TrainingError("too few scans to calibrate a 90 % interval")
    card["cross_validation"] = {split: {k: v for k, v in r.items()
                                        if k not in ("predicted", "fold")}
                                for split, r in results.items()}  # fmt:skip
    oof = oof_table(scans, results)
    extras = dict(extras or {})
    with tempfile.TemporaryDirectory() as tmp:
        figures = model_figures(oof, card, Path(tmp))
        card["figures"] = figures
        for file in figures.values():
            extras[f"figures/{file}"] = (Path(tmp) / file).read_bytes()
    buffer = io.StringIO()
    oof.to_csv(buffer, sep="\t", index=False, na_rep="n/a", float_format="%.4f")
    extras["oof_predictions.tsv"] = buffer.getvalue().encode()
    if estimator is not None and "nuisance_training" in card:
        # its card section reads the fitted block-size rule; save_bundle stores params again
        card["params"] = estimator.state()[1]
    extras["model_card.md"] = model_card_markdown(card).encode()
    target = run.target
    try:
        bundle = save_bundle(target, card, estimator=estimator, members=members, extras=extras)
    except (BundleError, ContractError) as err:
        raise TrainingError(str(err)) from None
    return bundle.path
