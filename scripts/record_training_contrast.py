"""Record the training scans' GM/WM intensity-peak ratios and contrast-to-noise ratios in the
card of a bundle trained before the card kept them (``training_data.contrast``, what
``contrast_outside_training_range`` and ``contrast_to_noise_below_training_range`` are judged
against). The weights are not touched.

    .venv/bin/python scripts/record_training_contrast.py DERIVATIVES BUNDLE [BUNDLE ...]

DERIVATIVES: the participant level of ../shared/data/ixi-hh-2mm run with the bundles' own
preprocessing (``--model none`` plus the contract's options). The training scans are found as
``scripts/train_default_bundle.py`` chose them; their number, and their preprocessing, must
match the card's, else nothing is written.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import pandas as pd

from bids_brainage.config import DEFAULT_CONTROL_LABELS
from bids_brainage.group.collect import collect_scan_table
from bids_brainage.group.training import contrast_range, preprocessing_of, select_training_scans
from bids_brainage.models.bundle import CONTRACT_DEFAULTS, sha256
from bids_brainage.reports.model_card import model_card_markdown, unoise_card_markdown

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_default_bundle import DATA, training_participants  # noqa: E402


def training_scans(derivatives: Path) -> pd.DataFrame:
    table, problems = collect_scan_table(DATA, derivatives, training_participants())
    for problem in problems:
        print(problem, file=sys.stderr)
    scans, _ = select_training_scans(table, DEFAULT_CONTROL_LABELS)
    return scans


def check_matches(card: dict, scans: pd.DataFrame, bundle: Path) -> None:
    """The derivatives must be the bundle's own training scans, on its own preprocessing."""
    if len(scans) != card["training_data"]["n_scans"]:
        sys.exit(f"{bundle}: {len(scans)} training scans found, the card says "
                 f"{card['training_data']['n_scans']}")  # fmt:skip
    oof = bundle / "oof_predictions.tsv"
    if oof.exists():
        trained_on = set(pd.read_csv(oof, sep="\t")["participant_id"])
        if trained_on != set(scans["participant_id"]):
            sys.exit(f"{bundle}: the training scans found differ from its oof_predictions.tsv")
    stripped = scans["qc_flags"].fillna("").str.contains("skull_stripped_input").any()
    for key, used in preprocessing_of(scans).items():
        if key == "stripped_n4_grid" and not stripped:  # it changes stripped inputs only
            continue
        trained_with = card["contract"].get(key, CONTRACT_DEFAULTS.get(key))
        if used != trained_with:
            sys.exit(f"{bundle}: the derivatives used {key}={used}, the bundle {trained_with}")


def record(bundle: Path, contrast: dict, explained_sha: dict[str, str]) -> None:
    card = json.loads((bundle / "model.json").read_text())
    card["training_data"]["contrast"] = contrast
    if card.get("explains", {}).get("name") in explained_sha:  # the explained card changed
        card["explains"]["model_json_sha256"] = explained_sha[card["explains"]["name"]]
    card.setdefault("amendments", []).append({
        "date": datetime.date.today().isoformat(),
        "what": f"training_data.contrast ({', '.join(contrast)}) recorded from the training "
                "scans' own preprocessing (scripts/record_training_contrast.py); weights "
                "unchanged"})  # fmt:skip
    render = unoise_card_markdown if card["kind"] == "unoise" else model_card_markdown
    (bundle / "model_card.md").write_text(render(card))
    card["files"] = {name: sha256(bundle / name) for name in card["files"]}
    (bundle / "model.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("derivatives", type=Path)
    parser.add_argument("bundles", nargs="+", type=Path)
    opts = parser.parse_args()
    scans = training_scans(opts.derivatives)
    contrast = contrast_range(scans["gm_wm_peak_ratio"], scans["cnr_gm_wm"])
    for name in ("gm_wm_peak_ratio", "cnr_gm_wm"):
        if contrast.get(name, {}).get("n") != len(scans):
            sys.exit(f"some training scans have no {name} in their QC file")
    cards = {b: json.loads((b / "model.json").read_text()) for b in opts.bundles}
    for bundle, card in cards.items():
        check_matches(card, scans, bundle)
    explained_sha = {}
    # explained bundles first: an explainer's card records their model.json checksum
    for bundle in sorted(opts.bundles, key=lambda b: cards[b]["kind"] == "unoise"):
        record(bundle, contrast, explained_sha)
        explained_sha[cards[bundle]["name"]] = sha256(bundle / "model.json")
        print(f"{bundle}: {contrast}")


if __name__ == "__main__":
    main()
