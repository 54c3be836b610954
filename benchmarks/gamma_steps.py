"""Which step moves the WM volume under a change of contrast: Atropos itself or N4.

    python benchmarks/gamma_steps.py KEEP [--subjects ixi202 ixi601 ixi544]

KEEP: a folder kept by ``benchmarks/invariance.py --keep`` with the ``gammabias`` transform
(gamma 0.8 and a ±20 % bias field). For each scan the original's N4 image and brain mask are
registered to the template once (log scale), and Atropos segments, with those same priors and
that same mask, (a) the original's N4 image, (b) that image raised to the power fitted between
the two N4 images (an exact change of contrast, same N4 field), and (c) the gamma copy's own N4
image resampled onto the original's grid (its own N4 field). (b) − (a) is what Atropos adds,
(c) − (b) what N4 adds; registration and mask stay fixed. Then both stored images go through
``--contrast-standardisation power`` (``standardise_contrast``: each raised to the power that
puts its GM/WM ratio, measured on its own N4 image and mask, at one value, then N4 again) and
the copy's result is compared with the original's in the same way. Prints Markdown.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nb
import numpy as np
from nibabel.processing import resample_from_to
from scipy.ndimage import gaussian_filter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bids_brainage.preprocessing.anatomical import (  # noqa: E402
    register_to_template,
    segment,
    standardise_contrast,
)
from bids_brainage.utils.templates import resolve_template  # noqa: E402


def fitted_power(original: np.ndarray, copy: np.ndarray, inside: np.ndarray) -> float:
    """The exponent k of copy ≈ c · original^k, by least squares on the logs inside the brain."""
    both = inside & (original > 0) & (copy > 0)
    return float(np.polyfit(np.log(original[both]), np.log(copy[both]), 1)[0])


def field_spread(original: np.ndarray, copy: np.ndarray, inside: np.ndarray, k: float):
    """5th and 95th percentiles of the smoothed log ratio copy / original^k inside the brain:
    how far the two N4 fields differ once the change of contrast is taken out."""
    both = inside & (original > 0) & (copy > 0)
    ratio = np.zeros(original.shape)
    ratio[both] = np.log(copy[both]) - k * np.log(original[both])
    ratio[both] -= np.median(ratio[both])
    weight = gaussian_filter(both.astype(float), 4)
    smooth = gaussian_filter(ratio, 4) / np.maximum(weight, 1e-3)
    return np.percentile(smooth[both], [5, 95])


def scan_rows(keep: Path, subject: str, template, scratch: Path) -> list[dict]:
    def path(copy, suffix):
        label = f"sub-{subject}{copy}"
        return keep / "out" / label / "anat" / f"{label}_{suffix}.nii.gz"

    original = nb.load(path("orig", "desc-preproc_T1w"))
    mask = path("orig", "desc-brain_mask")
    inside = nb.load(mask).get_fdata() > 0
    copy = resample_from_to(nb.load(path("gammabias", "desc-preproc_T1w")), original, order=1)
    o, c = original.get_fdata(), copy.get_fdata()
    k = fitted_power(o, c, inside)
    low, high = field_spread(o, c, inside, k)
    images = {"orig": path("orig", "desc-preproc_T1w")}
    for name, data in (("power", np.clip(o, 0, None) ** k), ("copy N4", np.clip(c, 0, None))):
        images[name] = scratch / f"{subject}_{name.replace(' ', '')}.nii.gz"
        nb.Nifti1Image(data.astype(np.float32), original.affine).to_filename(images[name])
    for copy in ("orig", "gammabias"):  # the stored images through the contrast step
        label = f"sub-{subject}{copy}"
        stored = keep / "bids" / label / "anat" / f"{label}_T1w.nii.gz"
        out = scratch / f"{subject}{copy}_standardised.nii.gz"
        standardise_contrast(stored, path(copy, "desc-preproc_T1w"), path(copy, "desc-brain_mask"),
                             out, stripped_grid="head", denoising="rician")  # fmt:skip
        images[f"{copy} standardised"] = out
        resample_from_to(nb.load(out), original, order=1).to_filename(out)
    transforms, _ = register_to_template(images["orig"], mask, template, None, "fast", scratch,
                                         "log")  # fmt:skip
    rows = []
    for scale in ("linear", "log"):
        volumes = {name: {t: float(p.sum()) for t, p in
                          segment(image, mask, template, transforms, scale)[0].items()}
                   for name, image in images.items()}  # fmt:skip
        for name, base in (("power", "orig"), ("copy N4", "orig"),
                           ("gammabias standardised", "orig standardised")):  # fmt:skip
            rows.append({"subject": subject, "scale": scale, "image": name, "power": k,
                         "field_low": low, "field_high": high,
                         **{t: 100 * (volumes[name][t] / volumes[base][t] - 1)
                            for t in volumes[base]}})  # fmt:skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("keep", type=Path, help="a folder kept by benchmarks/invariance.py")
    parser.add_argument("--subjects", nargs="+", default=["ixi202", "ixi601", "ixi544"])
    opts = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gamma_steps_") as scratch:
        template = resolve_template(Path(scratch) / "templates", 2)
        rows = [row for subject in opts.subjects
                for row in scan_rows(opts.keep, subject, template, Path(scratch))]  # fmt:skip
    print(f"{len(opts.subjects)} scans, {time.perf_counter() - started:.0f} s\n")
    for row in rows[::6]:
        print(
            f"{row['subject']}: power {row['power']:.3f}; N4 fields differ by "
            f"{row['field_low']:+.3f} to {row['field_high']:+.3f} (log, 5th–95th percentile)"
        )
    print("\n| Atropos on | image | Δ GM % | Δ WM % | Δ CSF % |\n|---|---|---|---|---|")
    for scale in ("linear", "log"):
        for name in ("power", "copy N4", "gammabias standardised"):
            part = [r for r in rows if r["scale"] == scale and r["image"] == name]
            cells = [", ".join(f"{r[t]:+.2f}" for r in part) for t in ("GM", "WM", "CSF")]
            print(f"| {scale} | {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
