"""Figures and the Markdown model card of a trained bundle."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..models.bundle import CONTRACT_DEFAULTS  # noqa: E402
from ..models.classical import COPY_SHIFT_LIMIT, COPY_SHIFT_PERCENTILE  # noqa: E402
from ..models.metrics import CS_LEVELS, cumulative_score  # noqa: E402
from ..models.predict import CNR_TOLERANCE, CONTRAST_TOLERANCE  # noqa: E402
from ..utils.io import atomic_path  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=100,
                    metadata={"Software": None})  # fmt:skip
    plt.close(fig)
    return path


def model_figures(oof: pd.DataFrame, card: dict, folder: Path) -> dict[str, str]:
    """Predicted vs chronological age and the CS curve per split; the learning curve."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    splits = list(dict.fromkeys(oof["split"]))
    fig, axes = plt.subplots(1, len(splits), figsize=(4.5 * len(splits), 4.2), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        part = oof[oof["split"] == split]
        ax.scatter(part["age"], part["predicted_age"], s=12, alpha=0.7)
        low, high = (
            part[["age", "predicted_age"]].min().min(),
            part[["age", "predicted_age"]].max().max(),
        )
        ax.plot([low, high], [low, high], "k--", lw=1)
        mae = np.mean(np.abs(part["predicted_age"] - part["age"]))
        ax.set(title=f"{split} split, out-of-fold (MAE {mae:.2f} y)",
               xlabel="chronological age (y)",
               ylabel="predicted age (y)")  # fmt:skip
    out["scatter"] = _save(fig, folder / "predicted_vs_age.png").name
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for split in splits:
        part = oof[oof["split"] == split]
        ax.plot(CS_LEVELS, [cumulative_score(part["age"], part["predicted_age"], a)
                            for a in CS_LEVELS], marker="o", label=split)  # fmt:skip
    ax.set(xlabel="error level α (years)", ylabel="CS(α)", ylim=(0, 1), title="Cumulative score")
    ax.legend()
    out["cumulative_score"] = _save(fig, folder / "cumulative_score.png").name
    curve = card["cross_validation"]["random"].get("learning_curve", {})
    if curve:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        points = sorted(curve.values(), key=lambda p: p["training_size"])
        ax.errorbar([p["training_size"] for p in points], [p["mae"] for p in points],
                    yerr=[p["mae_sd"] for p in points], marker="o", capsize=3)  # fmt:skip
        ax.axhline(card["cross_validation"]["random"]["metrics"]["baseline_mae"]["mean"],
                   color="grey", ls="--", label="median-age baseline")  # fmt:skip
        ax.set(
            xlabel="training scans", ylabel="MAE (years)", title="Learning curve (random split)"
        )
        ax.legend()
        out["learning_curve"] = _save(fig, folder / "learning_curve.png").name
    factors = card.get("selection_curve")
    if factors:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.plot([int(k) for k in factors], list(factors.values()), marker="o")
        ax.set(xlabel="downsampling factor (of the 2 mm grid)", ylabel="inner-CV MAE (years)",
               title="Over- and under-fitting (seed 000)")  # fmt:skip
        out["downsampling_curve"] = _save(fig, folder / "downsampling_curve.png").name
    return out


def _fmt(stat: dict, digits: int = 2) -> str:
    return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"


# How the card names each preprocessing choice of the contract, and its values
PREPROCESSING_WORDS = {
    "field_of_view": ("field of view", {"head": "each scan on its head plus 16 mm",
                                        "stored": "as stored"}),
    "intensity_scale": ("intensity scale", {
        "linear": "registration and Atropos on the intensities",
        "log": "registration and Atropos on the log intensities",
        "log-registration": "registration on the log intensities, Atropos on the intensities"}),
    "stripped_n4_grid": ("skull-stripped input", {"brain": "N4 on its own grid",
                                                  "head": "N4 on a head-sized grid"}),
    "denoising": ("denoising", {"none": "none", "rician": "Rician non-local means before N4"}),
    "contrast_standardisation": ("contrast", {
        "none": "as acquired",
        "power": "raised to the power that sets its GM/WM ratio, then N4 again"}),
    "bias_correction": ("bias field", {
        "head": "N4 inside the head",
        "brain": "N4 again inside the brain, on a head-sized grid around it"}),
}  # fmt:skip


def preprocessing_line(contract: dict) -> str:
    """The preprocessing the bundle was trained on, which ``auto`` reproduces at prediction."""
    parts = []
    for key, (name, values) in PREPROCESSING_WORDS.items():
        value = contract.get(key, CONTRACT_DEFAULTS[key])
        parts.append(f"{name}: {values.get(value, value)} (`{value}`)")
    return (
        "Preprocessing (the contract; `auto` runs it, a scan run otherwise is flagged "
        "`*_unlike_training`): " + "; ".join(parts) + "."
    )


def model_card_markdown(card: dict) -> str:
    """The human-readable model card; every figure comes from ``card`` (``model.json``)."""
    data = card["training_data"]
    lines = [
        f"# Model card: {card['name']} ({card['kind']})",
        "",
        f"bids_brainage {card['version']}. Input: {card['contract']['input']} features, "
        f"template {card['contract']['template']} at {card['contract']['resolution']} mm, "
        f"{card['contract']['normalisation']} intensity normalisation"
        + (
            f", {card['contract']['brain_extraction']} brain masks"
            if card["contract"].get("brain_extraction")
            else ""
        )
        + (
            f", every scan on a {card['contract']['working_voxel_mm']:g} mm working grid"
            if card["contract"].get("working_voxel_mm")
            else ""
        )
        + (
            ", GM/WM maps scaled to one total intracranial volume"
            if card["contract"].get("tissue_scaling") == "tiv"
            else ""
        )
        + ".",
        "",
        preprocessing_line(card["contract"]),
        "",
        "## Training data",
        f"- Dataset: {data['dataset']['Name']} (licence: {data['dataset'].get('License', 'n/a')})",
        f"- {data['n_scans']} scans of {data['n_participants']} participants; age "
        f"{data['age']['min']:.1f}–{data['age']['max']:.1f} years "
        f"(mean {data['age']['mean']:.1f}, "
        f"median {data['age']['median']:.1f}); sex {data['sex']}; sites {data['sites']}.",
        f"- Selection: {data['selection']}",
        f"- Excluded: {data['excluded'] or 'none'}",
    ]
    # the training scans' contrast measures, with the rule that flags a scan beyond them
    measures = (
        ("gm_wm_peak_ratio", "GM/WM intensity-peak ratio (contrast)", 3,
         f"more than {CONTRAST_TOLERANCE:g} outside this range",
         "contrast_outside_training_range"),
        ("cnr_gm_wm", "GM/WM contrast-to-noise ratio", 2,
         f"more than {CNR_TOLERANCE:.0%} below the lowest",
         "contrast_to_noise_below_training_range"),
    )  # fmt:skip
    for key, label, digits, rule, flag in measures:
        if spread := data.get("contrast", {}).get(key):
            lines += [f"- {label} {spread['min']:.{digits}f}–{spread['max']:.{digits}f} (median "
                      f"{spread['median']:.{digits}f}, {spread['n']} scans): a scan {rule} is "
                      f"flagged `{flag}`."]  # fmt:skip
    if data["dataset"].get("Acknowledgements"):
        lines += [f"- Acknowledgement: {data['dataset']['Acknowledgements']}"]
    lines += ["", "## Cross-validated accuracy (mean ± SD over folds)", "",
              "| split | folds | MAE (y) | r | R² | CS(5) | CS(10) | >50 y accuracy | "
              "median-age baseline MAE | 90 % interval coverage |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt:skip
    for split, result in card["cross_validation"].items():
        m = result["metrics"]
        lines.append(
            f"| {split} | {result['folds']} | {_fmt(m['mae'])} | {_fmt(m['r'])} | {_fmt(m['r2'])} "
            f"| {_fmt(m['cs']['5'])} | {_fmt(m['cs']['10'])} | "
            f"{_fmt(m['older_than_50_accuracy'])} | {_fmt(m['baseline_mae'])} | "
            f"{result['coverage']['empirical']:.2f} |"
        )
    if card.get("site_split_note"):
        lines += ["", card["site_split_note"]]
    random = card["cross_validation"]["random"]
    lines += ["", "MAE per decade (random split, pooled out-of-fold): " + ", ".join(
        f"{k}: {v:.1f}" for k, v in random["pooled"]["mae_by_decade"].items())]  # fmt:skip
    if random.get("learning_curve"):
        lines += [
            "",
            "Learning curve (random split): "
            + ", ".join(
                f"{p['training_size']} scans → {p['mae']:.2f} y"
                for p in sorted(
                    random["learning_curve"].values(), key=lambda p: p["training_size"]
                )
            ),
        ]
    nuisance = card.get("nuisance_training")
    if nuisance:
        params = card.get("params", {})
        voxel_mm = float(card["contract"].get("working_voxel_mm", 2.0))
        lines += ["", "## Nuisance copies in training", "",
                  f"- {nuisance['copies']} copies of "
                  f"{len(nuisance['source_participants'])} training participants, each the "
                  "same scan stored or acquired another way; method: "
                  f"{nuisance['method']}."]  # fmt:skip
        if params.get("members"):
            members = ", ".join(f"{voxel_mm * int(m['factor']):g} mm (alpha {m['alpha']:g})"
                                for m in params["members"])  # fmt:skip
            lines.append(f"- Block sizes: the prediction is the mean of the ridges fitted on "
                         f"{members} blocks (the downsampling curve shows each block size "
                         "alone).")  # fmt:skip
        if params.get("copy_shift"):
            shifts = ", ".join(f"{voxel_mm * int(k):g} mm {v:.2f} y"
                               for k, v in params["copy_shift"].items())  # fmt:skip
            if params.get("members"):
                lines.append("- Held-out copies in inner CV, each block size alone: "
                             f"{COPY_SHIFT_PERCENTILE:g}th percentile of the change against "
                             f"their source: {shifts}.")  # fmt:skip
            else:
                lines.append("- Block size: the most accurate in inner CV (held-out scans and "
                             "their copies) of those whose held-out copies stay within "
                             f"{COPY_SHIFT_LIMIT:g} y of their source ({COPY_SHIFT_PERCENTILE:g}"
                             f"th percentile of the change). That percentile by block size: "
                             f"{shifts}")  # fmt:skip
    local = card.get("local_cross_validation")
    if local:
        lines += [
            "", "## Local (voxel-level) accuracy, random split, out of fold", "",
            f"- Median within-participant MAE over brain voxels: "
            f"{local['median_within_participant_mae']:.2f} years (IQR "
            f"{local['within_participant_mae_iqr'][0]:.2f}–"
            f"{local['within_participant_mae_iqr'][1]:.2f}; seed 002 reports 9.5 on its "
            "healthy test sets).",
            "- Voxel-level MAE map (`voxel_mae.nii.gz`): median "
            f"{local['voxel_mae']['median']:.2f}, 5th–95th percentile "
            f"{local['voxel_mae']['p5']:.2f}–{local['voxel_mae']['p95']:.2f} years.",
            f"- Median voxel-level correlation of local brain age with age: "
            f"r = {local['voxel_r_median']:.2f}.",
            "- The global figures in the table above are the mean local brain age over the "
            "brain.",
        ]  # fmt:skip
    lines += [
        "",
        "## Prediction interval",
        f"Each prediction carries a split-conformal {card['interval']['coverage']:.0%} interval, "
        f"predicted age ± {card['interval']['halfwidth']:.2f} years: the "
        f"{card['interval']['coverage']:.0%} quantile (finite-sample corrected) of the "
        f"absolute out-of-fold errors of the {card['interval']['calibration']} split. In "
        "cross-validation, calibrating each fold on the other folds gave the coverage in the "
        "table above.",
        "",
        "## Intended use and limits",
        "Brain age of adults scanned like the training data. Accuracy on other scanners, "
        "field strengths or age ranges is unknown until checked: train and validate your own "
        "bundle on your controls (`group --train-model`). Predictions regress towards the "
        "training mean (regression dilution); correct for it at the group level.",
    ]
    if card.get("notes"):
        lines += ["", "## Notes", *[f"- {n}" for n in card["notes"]]]
    if card.get("figures"):
        lines += ["", "## Figures", *[f"![{k}](figures/{v})" for k, v in card["figures"].items()]]
    dataset = data["dataset"]
    licence = (
        f"The weights are derived from data licensed {dataset['License']} and are shared under "
        "the same terms (share alike). " if dataset.get("License") else
        "The weights are derived from the training data above: share them on its terms. "
    ) + dataset.get("HowToAcknowledge", "")  # fmt:skip
    lines += ["", "## Licence", licence.strip()]
    return "\n".join(lines) + "\n"


def voxel_map_figure(volume: np.ndarray, mask: np.ndarray, title: str, target: Path,
                     symmetric: bool = False) -> Path:  # fmt:skip
    """Three orthogonal slices through the centre of ``mask``, with a colour bar."""
    volume = np.where(mask, volume, np.nan)
    finite = volume[np.isfinite(volume)]
    if symmetric:
        limit = np.nanpercentile(np.abs(finite), 98) if finite.size else 1.0
        vmin, vmax, cmap = -limit, limit, "RdBu_r"
    else:
        vmin, vmax = np.nanpercentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
        cmap = "viridis"
    centre = [int(np.mean(idx)) for idx in np.nonzero(mask)]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    cuts = (volume[centre[0]], volume[:, centre[1]], volume[:, :, centre[2]])
    for ax, cut in zip(axes, cuts, strict=True):
        image = ax.imshow(np.rot90(cut), cmap=cmap, vmin=vmin, vmax=vmax)
        ax.axis("off")
    fig.colorbar(image, ax=list(axes), shrink=0.8)
    fig.suptitle(title)
    fig.savefig(target, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return target


def unoise_card_markdown(card: dict) -> str:
    """Model card of a U-noise bundle: what it explains, its settings and held-out check."""
    data, params = card["training_data"], card["params"]["network"]
    check, explained = card["validation"], card["explains"]
    dataset = data["dataset"].get("Name", "unnamed data")
    return "\n".join([
        f"# Model card: {card['name']} (U-noise importance, seed 003)",
        "",
        f"Explains **{explained['name']}** ({explained['kind']}; model.json SHA-256 "
        f"`{explained['model_json_sha256'][:16]}…`), whose weights stay frozen.",
        "",
        f"Trained on {check['train_scans']} scans of {dataset} (ages {data['age']['min']:.0f}–"
        f"{data['age']['max']:.0f}); {check['scans']} held-out scans check it.",
        "",
        "A 3-D U-Net, pretrained as an autoencoder, outputs a mask m in (0, 1) per voxel; noise "
        f"of SD {params['v_min']:g} + {params['v_max'] - params['v_min']:g}·m (units: the input "
        "channel's within-brain SD) is added and the frozen model must still predict the age; "
        f"loss = squared error − {params['ratio']:g}·mean log m over the brain. "
        "Per-scan importance = 1 − m (1: the voxel tolerates only the least noise).",
        "",
        "| held-out check | value |",
        "|---|---|",
        f"| MAE of the frozen model, clean inputs | {check['clean_mae']:.2f} years |",
        f"| MAE with the learnt noise added | {check['noisy_mae']:.2f} years |",
        f"| mean mask in the brain | {check['mean_mask_in_brain']:.3f} |",
        "",
        *([f"{check['seen_by_explained_model']} of the {check['scans']} held-out scans were in "
           f"the training set of {explained['name']}, so its clean MAE there is in-sample; the "
           "noisy MAE measures how much the learnt noise moves its predictions.", ""]
          if check.get("seen_by_explained_model") else []),
        f"Data: {dataset}, licence {data['dataset'].get('License', 'n/a')}"
        + (f"; {data['dataset']['Acknowledgements'].rstrip('.')}"
           if data["dataset"].get("Acknowledgements")
           else "") + ".",
        "",
        f"Noise model at {params['input_mm']:g} mm, widths {params['widths']}, "
        f"{params['pretrain_steps']} autoencoder steps then {params['steps']} noise steps of "
        f"{params['batch_size']} scans (Adam {params['learning_rate']:g}).",
        "",
        "![mean importance](figures/mean_importance.png)",
        "",
    ])  # fmt:skip
