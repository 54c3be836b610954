"""Train the packaged default bundle on the real IXI scans in ../shared/data/ixi-hh-2mm.

    .venv/bin/python scripts/train_default_bundle.py [--derivatives DIR] [--work DIR]

1. participant level (preprocessing only, ``--model none``) on every scan;
2. group level on every participant except the IXI scans the demo embeds
   (``bids_brainage/data/demo/sources.tsv``: the demo's predictions stay out of sample): every
   classical kind, then the CNN kinds named with ``--cnn`` (slow on a CPU);
3. an ensemble of the two best bundles (seed 000 averaged its two best models);
4. the bundle with the lowest random-split CV MAE is copied to
   ``bids_brainage/data/models/default`` and a CV table of all of them is printed;
5. with ``--local``: the local-unet bundle (``default-local``); with ``--unoise``: the U-noise
   model of the default bundle (``default-unoise``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from functools import partial
from pathlib import Path

import pandas as pd

from bids_brainage.cli.run import main
from bids_brainage.config import ModelSettings, Seeds
from bids_brainage.group.collect import (
    collect_scan_table,
    nuisance_copies_table,
    read_dataset_description,
)
from bids_brainage.group.training import TrainingRun, run_training
from bids_brainage.preprocessing.anatomical import INTENSITY_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ixi-hh-2mm"
CLASSICAL = ("hist-linear", "hist-gbm", "tissue-linear", "tissue-gpr")
DEMO_SOURCES = ROOT / "bids_brainage" / "data" / "demo" / "sources.tsv"


def training_participants() -> list[str]:
    """Every IXI participant but the demo's sources (the demo must be out of sample)."""
    held_out = set(pd.read_csv(DEMO_SOURCES, sep="\t")["source"])
    table = pd.read_csv(DATA / "participants.tsv", sep="\t")
    return [p for p in table["participant_id"] if p not in held_out]


def cv_mae(bundle: Path) -> float:
    card = json.loads((bundle / "model.json").read_text())
    return card["cross_validation"]["random"]["metrics"]["mae"]["mean"]


def run(*args: str) -> None:
    code = main([str(a) for a in args])
    if code != 0:
        sys.exit(f"bids_brainage {' '.join(map(str, args))} failed with exit code {code}")


def train_bundle(out: Path, participants: list[str], threads: int, nuisance, name: str,
                 kind: str, **settings) -> Path:  # fmt:skip
    """``group --train-model NAME --model-kind KIND`` without the group statistics: the
    training library called directly, with the seed the command would use; ``nuisance``: the
    table of nuisance copies of training scans (kinds that learn from them use them).
    """
    table, problems = collect_scan_table(DATA, out, participants)
    for problem in problems:
        print(problem, file=sys.stderr)
    job = TrainingRun(ModelSettings(train_model=name, model_kind=kind, **settings), out,
                      Seeds().derive("training"), threads, nuisance)  # fmt:skip
    return run_training(job, table, read_dataset_description(DATA))


def parse():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--derivatives", type=Path, default=Path("/tmp/ixi-derivatives"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/ixi-work"))
    parser.add_argument("--cnn", nargs="*", default=[], help="CNN kinds to train as well")
    parser.add_argument("--nprocs", default="2")
    parser.add_argument("--skip-participant", action="store_true")
    parser.add_argument("--intensity-scale", default="auto", choices=("auto", *INTENSITY_SETTINGS),
                        help="passed to the participant level")  # fmt:skip
    parser.add_argument("--denoising", default="auto", choices=("auto", "none", "rician"),
                        help="passed to the participant level")  # fmt:skip
    parser.add_argument("--contrast-standardisation", default="auto",
                        choices=("auto", "none", "power"),
                        help="passed to the participant level")  # fmt:skip
    parser.add_argument("--bias-correction", default="auto", choices=("auto", "head", "brain"),
                        help="passed to the participant level")  # fmt:skip
    parser.add_argument("--local", action="store_true", help="train the local-unet bundle")
    parser.add_argument("--unoise", action="store_true",
                        help="train the U-noise model of the default bundle")  # fmt:skip
    parser.add_argument("--nuisance", nargs=2, type=Path, metavar=("BIDS", "DERIVATIVES"),
                        action="append",
                        help="nuisance copies of training scans (scripts/nuisance_copies.py) "
                             "and their participant outputs; may be repeated")  # fmt:skip
    parser.add_argument("--install", action="store_true",
                        help="copy the best bundle into the package as 'default'")  # fmt:skip
    return parser.parse_args()


def train_all():
    opts = parse()
    out, work = opts.derivatives, opts.work
    if not opts.skip_participant:
        run(DATA, out, "participant", "--model", "none", "-w", work, "--nprocs", opts.nprocs,
            "--intensity-scale", opts.intensity_scale, "--denoising", opts.denoising,
            "--contrast-standardisation", opts.contrast_standardisation,
            "--bias-correction", opts.bias_correction)  # fmt:skip
    nuisance = (pd.concat([nuisance_copies_table(*pair) for pair in opts.nuisance],
                          ignore_index=True) if opts.nuisance else None)  # fmt:skip
    train = partial(train_bundle, out, training_participants(), int(opts.nprocs), nuisance)
    bundles = {f"ixi-{kind}": train(f"ixi-{kind}", kind) for kind in (*CLASSICAL, *opts.cnn)}
    best_two = sorted(bundles, key=lambda n: cv_mae(bundles[n]))[:2]
    bundles["ixi-ensemble"] = train(
        "ixi-ensemble", "ensemble", ensemble_members=[str(bundles[n]) for n in best_two]
    )
    for name, path in sorted(bundles.items(), key=lambda item: cv_mae(item[1])):
        print(f"{name:24s} random-split CV MAE {cv_mae(path):.2f}")
    best = min(bundles, key=lambda n: cv_mae(bundles[n]))
    packaged = ROOT / "bids_brainage" / "data" / "models"
    installs = {"default": bundles[best]}
    if opts.local:
        installs["default-local"] = train("ixi-local-unet", "local-unet")
    if opts.unoise:  # explains the bundle installed as default
        installs["default-unoise"] = train(
            "ixi-unoise", "unoise", explain_model=str(bundles[best])
        )
    for name, source in installs.items() if opts.install else ():
        shutil.rmtree(packaged / name, ignore_errors=True)
        shutil.copytree(source, packaged / name)
        print(f"installed {source.name} as {packaged / name}")


if __name__ == "__main__":
    train_all()
