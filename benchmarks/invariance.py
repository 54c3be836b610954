"""Same brain, same age? Predicted age and tissue volumes on nuisance copies of real IXI scans.

    python benchmarks/invariance.py [--subjects 4 | --participants sub-IXI080 ...]
        [--transforms up1mm lps ...] [--nprocs 2] [--keep DIR] [--rescore BUNDLE --keep DIR ...]

For each of N IXI participants with an age (spread over the age range), or those named, the
scan is copied under every transform of ``bids_brainage.synthetic.nuisance`` (plus
"skull-stripped with the app's own mask of the original"), the participant level runs on all
copies with the default global model, and the change against the original is tabulated:
predicted age (years) and GM, WM and CSF volumes (%). Targets (issue 18): median |Δ age| ≤
1.5 y, max ≤ 4 y, volumes within 3 %. Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nb
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
IXI = ROOT.parent / "shared" / "data" / "ixi-hh-2mm"
sys.path.insert(0, str(ROOT))

from bids_brainage.preprocessing.anatomical import INTENSITY_SETTINGS  # noqa: E402
from bids_brainage.preprocessing.qc import gm_wm_peak_ratio  # noqa: E402
from bids_brainage.synthetic.nuisance import (  # noqa: E402
    TRANSFORMS,
    aligned_to_template,
    skull_strip,
    template_brain,
)

TARGET_MEDIAN, TARGET_MAX, TARGET_VOLUME = 1.5, 4.0, 3.0
IXI_DIR = [IXI]  # --ixi replaces it
PREPROCESSING_OPTIONS: list[str] = []  # --intensity-scale, --stripped-n4-grid, --denoising, ...
# copies made from the original and the app's own brain mask of it
MASKED = {"skullstrip": "skull-stripped with its own mask",
          "mnistrip": "skull-stripped, affinely aligned to MNI at 1 mm"}  # fmt:skip


def masked_copy(name: str, img: nb.Nifti1Image, mask: nb.Nifti1Image) -> nb.Nifti1Image:
    stripped = skull_strip(img, mask)
    return stripped if name == "skullstrip" else aligned_to_template(stripped, template_brain())


def ixi_participants() -> pd.DataFrame:
    return pd.read_csv(IXI_DIR[0] / "participants.tsv", sep="\t", na_values="n/a")


def pick_subjects(n: int) -> pd.DataFrame:
    table = ixi_participants().dropna(subset=["age"]).sort_values("age")
    step = max(1, len(table) // n)
    return table.iloc[::step].head(n)


def named_subjects(labels: list[str]) -> pd.DataFrame:
    table = ixi_participants().set_index("participant_id")
    missing = [label for label in labels if label not in table.index]
    if missing:
        sys.exit(f"not in {IXI_DIR[0] / 'participants.tsv'}: {', '.join(missing)}")
    return table.loc[labels].reset_index()


def write_dataset(root: Path, rows: list[dict]) -> None:
    description = {"Name": "IXI nuisance copies", "BIDSVersion": "1.10.0",
                   "License": "CC BY-SA 3.0"}  # fmt:skip
    (root / "dataset_description.json").write_text(json.dumps(description))
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)


def add_scan(root: Path, label: str, img: nb.Nifti1Image) -> None:
    anat = root / f"sub-{label}" / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    img.to_filename(anat / f"sub-{label}_T1w.nii.gz")


def participant(bids: Path, out: Path, work: Path, labels: list[str], nprocs: int,
                field_of_view: str = "auto") -> None:  # fmt:skip
    cmd = [sys.executable, "-m", "bids_brainage.cli.run", str(bids), str(out), "participant",
           "-w", str(work), "--nprocs", str(nprocs), "--model", "default",
           "--field-of-view", field_of_view, *PREPROCESSING_OPTIONS,
           "--skip-bids-validation", "--no-reports", "--participant-label", *labels]  # fmt:skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        sys.exit(done.stderr[-3000:])


def measure(out: Path, label: str) -> dict | None:
    anat = out / f"sub-{label}" / "anat"
    try:
        age = pd.read_csv(anat / f"sub-{label}_brainage.tsv", sep="\t")["predicted_age"].iloc[0]
        volumes = pd.read_csv(anat / f"sub-{label}_desc-volumes_features.tsv", sep="\t").iloc[0]
        qc = json.loads((anat / f"sub-{label}_qc.json").read_text())
    except (OSError, KeyError, IndexError):
        return None
    ratio = gm_wm_peak_ratio(qc.get("measures", {}))
    return {"age": float(age), "gm": float(volumes["gm_ml"]), "wm": float(volumes["wm_ml"]),
            "csf": float(volumes["csf_ml"]), "flags": ",".join(qc["flags"]),
            "peak_ratio": float("nan") if ratio is None else ratio,
            "cnr": float(qc.get("measures", {}).get("cnr_gm_wm", float("nan")))}  # fmt:skip


def run(
    subjects: pd.DataFrame,
    transforms: list[str],
    nprocs: int,
    keep: Path | None,
    field_of_view: str = "auto",
):
    root = Path(tempfile.mkdtemp(prefix="invariance_")) if keep is None else keep
    bids, out, work = root / "bids", root / "out", root / "work"
    bids.mkdir(parents=True, exist_ok=True)
    rows, originals = [], []
    for row in subjects.itertuples():
        label = row.participant_id.removeprefix("sub-").replace("IXI", "ixi")
        sid = row.participant_id
        img = nb.load(IXI_DIR[0] / sid / "anat" / f"{sid}_T1w.nii.gz")
        add_scan(bids, f"{label}orig", img)
        rows.append({"participant_id": f"sub-{label}orig", "age": row.age})
        originals.append((label, img, row.age))
        for name in transforms:
            if name not in MASKED:
                add_scan(bids, f"{label}{name}", TRANSFORMS[name][1](img))
                rows.append({"participant_id": f"sub-{label}{name}", "age": row.age})
    write_dataset(bids, rows)
    started = time.perf_counter()
    participant(
        bids, out, work, [f"{label}orig" for label, _, _ in originals], nprocs, field_of_view
    )
    for name in (n for n in transforms if n in MASKED):
        for label, img, age in originals:
            mask = out / f"sub-{label}orig" / "anat" / f"sub-{label}orig_desc-brain_mask.nii.gz"
            add_scan(bids, f"{label}{name}", masked_copy(name, img, nb.load(mask)))
            rows.append({"participant_id": f"sub-{label}{name}", "age": age})
        write_dataset(bids, rows)
    copies = [r["participant_id"].removeprefix("sub-") for r in rows
              if not r["participant_id"].endswith("orig")]  # fmt:skip
    participant(bids, out, work, copies, nprocs, field_of_view)
    elapsed = time.perf_counter() - started
    records = []
    for label, _, age in originals:
        base = measure(out, f"{label}orig")
        for name in transforms:
            copy = measure(out, f"{label}{name}")
            if base is None or copy is None:
                records.append({"subject": label, "transform": name, "failed": True})
                continue
            records.append({
                "subject": label, "transform": name, "age": age, "failed": False,
                "delta_age": copy["age"] - base["age"],
                **{f"delta_{t}_pct": 100 * (copy[t] - base[t]) / base[t]
                   for t in ("gm", "wm", "csf")},
                "peak_ratio": copy["peak_ratio"],
                "delta_peak_ratio": copy["peak_ratio"] - base["peak_ratio"],
                "delta_cnr_pct": 100 * (copy["cnr"] - base["cnr"]) / base["cnr"],
                "flags": copy["flags"],
            })  # fmt:skip
    if keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return pd.DataFrame(records), elapsed


def rescore(keep: Path, bundle: str) -> pd.DataFrame:
    """Δ age of another bundle on the copies kept by an earlier ``--keep`` run: its features
    (template-space maps, histograms) do not depend on the model, so no rerun is needed.
    Tissue volumes are the kept run's.
    """
    from bids_brainage.models.bundle import load_selected_bundles
    from bids_brainage.models.inputs import ScanFeatures
    from bids_brainage.utils.derivatives import ScanDerivatives

    model = load_selected_bundles([bundle])[0]
    out = keep / "out"
    ages = {}
    for qc_file in ScanDerivatives.find_qc(out):
        qc = json.loads(qc_file.read_text())
        features = ScanFeatures(**ScanDerivatives.from_qc(out, qc).model_inputs())
        ages[qc["scan"]["subject"]] = model.predict_scan(features)
    records = []
    for label in sorted({k.removesuffix("orig") for k in ages if k.endswith("orig")}):
        base = measure(out, f"{label}orig")
        for name in sorted(k.removeprefix(label) for k in ages if k.startswith(label)):
            if name == "orig":
                continue
            copy = measure(out, f"{label}{name}")
            records.append({
                "subject": label, "transform": name, "age": None, "failed": False,
                "delta_age": ages[f"{label}{name}"] - ages[f"{label}orig"],
                **{f"delta_{t}_pct": 100 * (copy[t] - base[t]) / base[t]
                   for t in ("gm", "wm", "csf")},
                "peak_ratio": copy["peak_ratio"],
                "delta_peak_ratio": copy["peak_ratio"] - base["peak_ratio"],
                "delta_cnr_pct": 100 * (copy["cnr"] - base["cnr"]) / base["cnr"],
                "flags": copy["flags"],
            })  # fmt:skip
    return pd.DataFrame(records)


def summarise(records: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for name, part in records.groupby("transform", sort=False):
        ok = part[~part["failed"]]
        abs_age = ok["delta_age"].abs()
        worst_volume = ok[["delta_gm_pct", "delta_wm_pct", "delta_csf_pct"]].abs().max().max()
        rows.append({
            "transform": name, "n": len(ok), "failed": int(part["failed"].sum()),
            "median_abs_delta_age": abs_age.median(), "max_abs_delta_age": abs_age.max(),
            "median_delta_gm_pct": ok["delta_gm_pct"].median(),
            "median_delta_wm_pct": ok["delta_wm_pct"].median(),
            "median_delta_csf_pct": ok["delta_csf_pct"].median(),
            "max_abs_delta_volume_pct": worst_volume,
            # the GM/WM peak ratio that contrast_outside_training_range is judged on
            "max_abs_delta_peak_ratio": ok["delta_peak_ratio"].abs().max(),
            # the CNR that contrast_to_noise_below_training_range is judged on: its largest drop
            "min_delta_cnr_pct": ok["delta_cnr_pct"].min(),
            "meets_targets": bool(abs_age.median() <= TARGET_MEDIAN
                                  and abs_age.max() <= TARGET_MAX
                                  and worst_volume <= TARGET_VOLUME and not part["failed"].any()),
        })  # fmt:skip
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--transforms", nargs="*", default=[*MASKED, *TRANSFORMS])
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--field-of-view", default="auto", choices=("auto", "head", "stored"),
                        help="passed to the participant level")  # fmt:skip
    parser.add_argument(
        "--intensity-scale",
        choices=("auto", *INTENSITY_SETTINGS),
        help="passed to the participant level (log with the linear default "
        "bundle: its ages are flagged, the volumes are what counts)",
    )
    parser.add_argument("--stripped-n4-grid", choices=("auto", "brain", "head"),
                        help="passed to the participant level")  # fmt:skip
    parser.add_argument("--denoising", choices=("auto", "none", "rician"),
                        help="passed to the participant level")  # fmt:skip
    parser.add_argument("--contrast-standardisation", choices=("auto", "none", "power"),
                        help="passed to the participant level")  # fmt:skip
    parser.add_argument("--bias-correction", choices=("auto", "head", "brain"),
                        help="passed to the participant level")  # fmt:skip
    parser.add_argument(
        "--participants",
        nargs="+",
        metavar="LABEL",
        help="these IXI participants (sub-IXI080 ...) instead of --subjects",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        nargs="+",
        help="keep the copies and outputs in this folder (with --rescore: one or "
        "more folders of earlier runs, pooled)",
    )
    parser.add_argument("--save", type=Path, help="write the per-scan table as TSV")
    parser.add_argument("--ixi", type=Path, default=IXI, help="the IXI BIDS folder")
    parser.add_argument("--rescore", metavar="BUNDLE",
                        help="with --keep DIR of an earlier run: score this bundle on its "
                             "copies without rerunning the participant level")  # fmt:skip
    opts = parser.parse_args()
    IXI_DIR[0] = opts.ixi
    for flag in ("intensity_scale", "stripped_n4_grid", "denoising", "contrast_standardisation",
                 "bias_correction"):
        if getattr(opts, flag):
            PREPROCESSING_OPTIONS.extend([f"--{flag.replace('_', '-')}", getattr(opts, flag)])
    if opts.rescore:
        started = time.perf_counter()
        records = pd.concat([rescore(keep, opts.rescore) for keep in opts.keep], ignore_index=True)
        elapsed = time.perf_counter() - started
        opts.transforms = list(dict.fromkeys(records["transform"]))
        opts.subjects = records["subject"].nunique()
    else:
        if opts.keep and len(opts.keep) > 1:
            parser.error("--keep takes one folder unless --rescore is given")
        subjects = (named_subjects(opts.participants) if opts.participants
                    else pick_subjects(opts.subjects))  # fmt:skip
        opts.subjects = len(subjects)
        records, elapsed = run(
            subjects,
            opts.transforms,
            opts.nprocs,
            opts.keep[0] if opts.keep else None,
            opts.field_of_view,
        )
    if opts.save:
        records.to_csv(opts.save, sep="\t", index=False)
    table = summarise(records)
    labels = {**MASKED, **{k: v[0] for k, v in TRANSFORMS.items()}}
    print(f"{opts.subjects} IXI scans, {len(opts.transforms)} transforms, {elapsed:.0f} s\n")
    print(
        "| transform | n | median abs Δ age (y) | max abs Δ age (y) | Δ GM % | Δ WM % | "
        "Δ CSF % | max abs Δ volume % | max abs Δ GM/WM peak ratio | largest CNR drop % | "
        "targets |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in table.itertuples():
        print(
            f"| {labels.get(row.transform, row.transform)} | {row.n} | "
            f"{row.median_abs_delta_age:.2f} | {row.max_abs_delta_age:.2f} | "
            f"{row.median_delta_gm_pct:+.1f} | {row.median_delta_wm_pct:+.1f} | "
            f"{row.median_delta_csf_pct:+.1f} | {row.max_abs_delta_volume_pct:.1f} | "
            f"{row.max_abs_delta_peak_ratio:.3f} | {min(row.min_delta_cnr_pct, 0):.0f} | "
            f"{'met' if row.meets_targets else 'not met'} |"
        )


if __name__ == "__main__":
    main()
