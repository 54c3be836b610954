"""How tissue-linear variants trade CV accuracy against invariance, on nuisance copies.

    python benchmarks/nuisance_training.py DERIVATIVES --copies BIDS DERIVATIVES [--copies ...]
        [--invariance KEEP]

DERIVATIVES: the participant level (``--model none``) of the IXI scans; ``--copies``: nuisance
copies of training participants (``scripts/nuisance_copies.py``) and their participant level;
``--invariance``: a folder kept by ``benchmarks/invariance.py --keep`` (other scans, other
transform parameters). Each variant is scored by the 5-fold random split of training (its seed):
CV MAE on the originals, the out-of-fold MAE on the copies (each copy predicted by the fold model
that did not see its source), the out-of-fold |copy − source| shift per training transform
(median / max), and, fitted on every training scan, the shift on the invariance copies. The
demo's sources are left out, as in training. Variants: the plain ridge at each block size,
larger fixed penalties, a PCA-truncated ridge, smoothed maps, augmentation with the copies,
and the mean of augmented ridges at three block sizes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import GroupKFold

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from train_default_bundle import DATA, training_participants  # noqa: E402

from bids_brainage.config import ModelSettings, Seeds  # noqa: E402
from bids_brainage.group.collect import collect_scan_table, nuisance_copies_table  # noqa: E402
from bids_brainage.group.training import load_design, select_training_scans  # noqa: E402
from bids_brainage.models.classical import RIDGE_ALPHAS, _in_brain, block_average  # noqa: E402
from bids_brainage.models.training import first_rows  # noqa: E402

SEED = Seeds().derive("training")


class Variant:
    """Block-averaged (optionally smoothed) maps → standardised → ridge (RidgeCV's penalty or a
    fixed one), optionally on the first ``components`` principal components; ``fit`` may add
    augmentation rows.
    """

    def __init__(self, factor=4, alpha=None, sigma=0.0, components=None):
        self.factor, self.alpha, self.sigma, self.components = factor, alpha, sigma, components

    def design(self, maps):
        if self.sigma:
            maps = gaussian_filter(maps, (0, 0, self.sigma, self.sigma, self.sigma))
        return block_average(maps, self.factor).reshape(len(maps), -1)

    def fit(self, design, ages, extra=None):
        self.voxels = _in_brain(design, True)
        if extra is not None:
            design, ages = np.concatenate([design, extra[0]]), np.concatenate([ages, extra[1]])
        design = design[:, self.voxels].astype(np.float64)
        self.mean, self.scale = design.mean(0), design.std(0)
        self.scale[self.scale == 0] = 1
        z = (design - self.mean) / self.scale
        self.basis = None
        if self.components:
            self.basis = np.linalg.svd(z, full_matrices=False)[2][: self.components].T
            z = z @ self.basis
        ridge = RidgeCV(alphas=RIDGE_ALPHAS) if self.alpha is None else Ridge(self.alpha)
        self.ridge = ridge.fit(z, ages)
        return self

    def predict(self, design):
        z = (design[:, self.voxels] - self.mean) / self.scale
        return self.ridge.predict(z if self.basis is None else z @ self.basis)


class AveragedVariant:
    """The mean of plain ridges at several block sizes (``tissue-linear``'s default since
    round 19); its design is the block sizes' designs side by side.
    """

    def __init__(self, factors=(4, 6, 8)):
        self.members = [Variant(f) for f in factors]

    def design(self, maps):
        parts = [m.design(maps) for m in self.members]
        self.edges = np.cumsum([0] + [p.shape[1] for p in parts])
        return np.concatenate(parts, axis=1)

    def _parts(self, design):
        return [design[:, a:b] for a, b in zip(self.edges[:-1], self.edges[1:], strict=True)]

    def fit(self, design, ages, extra=None):
        extras = self._parts(extra[0]) if extra is not None else [None] * len(self.members)
        for member, part, more in zip(self.members, self._parts(design), extras, strict=True):
            member.fit(part, ages, None if more is None else (more, extra[1]))
        return self

    def predict(self, design):
        return np.mean([m.predict(p) for m, p in zip(self.members, self._parts(design),
                                                      strict=True)], axis=0)  # fmt:skip


def load(derivatives: Path, copies: list[tuple[Path, Path]], invariance: Path | None):
    table, _ = collect_scan_table(DATA, derivatives, training_participants())
    scans, _ = select_training_scans(table, ModelSettings().control_labels)
    scaling = ModelSettings().tissue_scaling
    X, _, _ = load_design(scans, "tissue", scaling)
    ids = scans["participant_id"].to_numpy()
    table = pd.concat([nuisance_copies_table(*pair) for pair in copies], ignore_index=True)
    table = table[table["source_participant"].isin(ids)].reset_index(drop=True)
    XC, _, _ = load_design(table, "tissue", scaling)
    first = first_rows(ids)
    sources = np.array([first[s] for s in table["source_participant"]])
    transforms = np.array([p.removeprefix(s) for p, s in
                           zip(table["participant_id"], table["source_participant"],
                               strict=True)])  # fmt:skip
    XB = labels = None
    if invariance is not None:
        kept, _ = collect_scan_table(invariance / "bids", invariance / "out")
        XB, _, _ = load_design(kept, "tissue", scaling)
        labels = kept["participant_id"].str.removeprefix("sub-").to_numpy()
    return X, scans["age"].to_numpy(float), ids, XC, sources, transforms, XB, labels


def shifts_table(values, groups) -> dict:
    out = {}
    for name in sorted(set(groups)):
        shift = np.abs(np.asarray(values)[np.asarray(groups) == name])
        out[name] = f"{np.median(shift):.2f} / {shift.max():.2f}"
    return out


def score(variant, data, augment: bool) -> dict:
    X, y, ids, XC, sources, transforms, XB, labels = data
    folds = list(GroupKFold(5, shuffle=True, random_state=SEED).split(X, groups=ids))
    predicted, shift = np.full(len(y), np.nan), np.full(len(XC), np.nan)
    for train, test in folds:
        own = np.isin(sources, train)
        extra = (XC[own], y[sources[own]]) if augment else None
        model = variant.fit(X[train], y[train], extra)
        predicted[test] = model.predict(X[test])
        held = np.isin(sources, test)
        shift[held] = model.predict(XC[held]) - predicted[sources[held]]
    maes = [np.mean(np.abs(predicted[t] - y[t])) for _, t in folds]
    row = {"CV MAE": f"{np.mean(maes):.2f} ± {np.std(maes, ddof=1):.2f}",
           "copies MAE": f"{np.mean(np.abs(predicted[sources] + shift - y[sources])):.2f}",
           **shifts_table(shift, transforms)}  # fmt:skip
    if XB is not None:
        model = variant.fit(X, y, (XC, y[sources]) if augment else None)
        ages = dict(zip(labels, model.predict(XB), strict=True))
        moved = [(label[6:], ages[label] - ages[label[:6] + "orig"]) for label in ages
                 if not label.endswith("orig")]  # fmt:skip
        table = shifts_table([m for _, m in moved], [n for n, _ in moved])
        row.update({f"invariance {k}": v for k, v in table.items()})
    return row


VARIANTS = {  # name: (factor, alpha, sigma in 2 mm voxels, components, augment)
    **{f"ridge, {2 * f} mm blocks": (f, None, 0.0, None, False) for f in (3, 4, 6, 8)},
    **{f"ridge, 8 mm, alpha {a:g}": (4, a, 0.0, None, False) for a in (1e3, 1e4, 1e5)},
    **{f"ridge on {k} PCs, 8 mm": (4, None, 0.0, k, False) for k in (20, 60)},
    "ridge, maps smoothed (σ 3 mm), 8 mm": (4, None, 1.5, None, False),
    **{f"augmented ridge, {2 * f} mm blocks": (f, None, 0.0, None, True) for f in (3, 4, 6, 8)},
    "augmented ridges, mean of 8, 12 and 16 mm blocks": ((4, 6, 8), None, 0.0, None, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("derivatives", type=Path)
    parser.add_argument("--copies", nargs=2, type=Path, action="append", required=True,
                        metavar=("BIDS", "DERIVATIVES"))  # fmt:skip
    parser.add_argument("--invariance", type=Path)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    opts = parser.parse_args()
    started = time.perf_counter()
    data = load(opts.derivatives, opts.copies, opts.invariance)
    rows = []
    for name in opts.variants:
        factor, alpha, sigma, components, augment = VARIANTS[name]
        variant = (AveragedVariant(factor) if isinstance(factor, tuple)
                   else Variant(factor, alpha, sigma, components))  # fmt:skip
        designs = [variant.design(a) if a is not None and a.ndim > 2 else a for a in data]
        rows.append({"variant": name, **score(variant, designs, augment)})
        print(rows[-1], file=sys.stderr, flush=True)
    print(f"{len(data[0])} training scans, {len(data[3])} copies, "
          f"{time.perf_counter() - started:.0f} s\n")  # fmt:skip
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
