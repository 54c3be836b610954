"""Build the demo's BIDS dataset from real IXI scans (``bids_brainage/data/demo/bids``).

    .venv/bin/python scripts/make_demo_dataset.py --derivatives DIR

DIR holds participant-level outputs of ../shared/data/ixi-hh-2mm (``--model none`` is enough;
``scripts/train_default_bundle.py`` makes them). The scans are those of
``bids_brainage/data/demo/sources.tsv``, all left out of the packaged models' training:

- controls: the IXI scans byte for byte;
- patients: a planted, documented temporal-lobe atrophy. Template-space Harvard-Oxford temporal
  cortex, hippocampus and amygdala labels are brought onto the scan by an ANTs SyN registration
  of the template to the scan's preprocessed T1w; the grey matter of those regions that borders
  CSF loses its outer layer of voxels, ``--layers`` times (each voxel takes the scan's median
  CSF intensity), as sulci widen in neurodegeneration;
- a rescan (``ses-2``) of one control: the same scan reoriented to LPS, shifted by a few mm and
  given fresh Rician noise.

Writes the dataset, its README (IXI credit, CC BY-SA 3.0, what was done to each scan) and
prints the planted volume loss of each patient.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.processing import resample_from_to
from scipy import ndimage

from bids_brainage.synthetic import nuisance
from bids_brainage.utils.atlas import harvard_oxford
from bids_brainage.utils.templates import resolve_template

ROOT = Path(__file__).resolve().parents[1]
IXI = ROOT.parent / "shared" / "data" / "ixi-hh-2mm"
DEMO = ROOT / "bids_brainage" / "data" / "demo"
ATROPHY_REGIONS = ("Temporal", "Hippocampus", "Amygdala")
RESCAN_SHIFT_MM = (3.0, -4.0, 5.0)
LABELS = {"CSF": 1, "GM": 2, "WM": 3}  # the participant level's dseg


def derivative(derivatives: Path, subject: str, pattern: str) -> Path:
    (path,) = sorted((derivatives / subject / "anat").glob(f"{subject}_{pattern}"))
    return path


def temporal_labels_on(t1w_preproc: Path, brain_mask: Path, work: Path) -> np.ndarray:
    """The atrophy regions of the Harvard-Oxford atlas on the grid of ``t1w_preproc``."""
    import ants

    template = resolve_template(work / "templates", resolution=2)
    atlas_file, names = harvard_oxford(template, work / "templates")
    wanted = [i + 1 for i, n in enumerate(names) if any(r in n for r in ATROPHY_REGIONS)]
    fixed = ants.image_read(str(t1w_preproc)) * ants.image_read(str(brain_mask))
    moving = ants.image_read(str(template.t1w)) * ants.image_read(str(template.brain_mask))
    registration = ants.registration(fixed, moving, type_of_transform="SyN",
                                     outprefix=str(work / "demo_reg_"))  # fmt:skip
    labels = ants.apply_transforms(fixed, ants.image_read(str(atlas_file)),
                                   registration["fwdtransforms"],
                                   interpolator="nearestNeighbor").numpy()  # fmt:skip
    return np.isin(np.rint(labels).astype(int), wanted)


def plant_atrophy(raw: nib.Nifti1Image, dseg: np.ndarray, region: np.ndarray, layers: int):
    """Erode the CSF-bordering grey matter of ``region`` (all arrays on the raw grid).

    The stored values and scaling of every other voxel stay as they were.
    """
    stored = np.asanyarray(raw.dataobj.get_unscaled())
    slope, inter = float(raw.dataobj.slope), float(raw.dataobj.inter)
    gm = dseg == LABELS["GM"]
    tissue = np.isin(dseg, (LABELS["GM"], LABELS["WM"]))
    region = ndimage.binary_dilation(region, iterations=1)
    removed = np.zeros_like(gm)
    for _ in range(layers):
        outer = tissue & ~ndimage.binary_erosion(tissue) & gm & region
        removed |= outer
        tissue &= ~outer
    edited = stored.copy()
    edited[removed] = np.median(stored[dseg == LABELS["CSF"]]).astype(stored.dtype)
    out = nib.Nifti1Image(edited, raw.affine, raw.header)
    out.header.set_slope_inter(slope, inter)
    voxel_ml = float(np.prod(raw.header.get_zooms()[:3])) / 1000
    facts = {
        "gm_removed_ml": round(float(removed.sum()) * voxel_ml, 1),
        "region_gm_ml": round(float((gm & region).sum()) * voxel_ml, 1),
        "total_gm_ml": round(float(gm.sum()) * voxel_ml, 1),
    }
    facts["region_gm_loss_pct"] = round(100 * facts["gm_removed_ml"] / facts["region_gm_ml"], 1)
    facts["total_gm_loss_pct"] = round(100 * facts["gm_removed_ml"] / facts["total_gm_ml"], 1)
    return out, facts


def rescan(raw: nib.Nifti1Image, seed: int) -> nib.Nifti1Image:
    moved = nuisance.reorient(raw, "LPS")
    affine = moved.affine.copy()
    affine[:3, 3] += RESCAN_SHIFT_MM
    moved = nib.Nifti1Image(np.asanyarray(moved.dataobj), affine, moved.header)
    return nuisance.as_uint8_scaled(nuisance.rician_noise(moved, fraction=0.02, seed=seed))


README = """# bids_brainage demo dataset: real IXI scans

{n} T1-weighted head scans of {m} people from the IXI dataset (Hammersmith Hospital, Philips
3 T), as 2 mm uint8 copies published in the CBICA/NiChart_Project repository history.

**Licence: CC BY-SA 3.0.** IXI data: https://brain-development.org/ixi-dataset/ . This
dataset, derived from IXI, is shared alike under the same licence.

None of these participants was in the training data of the models packaged with bids_brainage,
so the demo's brain ages are out of sample.

What was done to each scan (``scripts/make_demo_dataset.py`` made this folder):

| participant | session | age | what it is |
|---|---|---|---|
{rows}

**Planted atrophy.** The Harvard-Oxford temporal cortex, hippocampus and amygdala regions were
brought onto each patient's scan by an ANTs SyN registration of the template; the grey matter
of those regions that borders CSF lost its outer {layers} layer(s) of 2 mm voxels, each set to
the scan's median CSF intensity (widened sulci, thinner temporal cortex). The two patients'
brain-PAD should therefore come out positive, and their local brain-age maps older in the
temporal lobes. The atrophy is severe by design, so that two patients show it against five
controls whose own errors are several years. These are not real patients.

**Rescan.** ``ses-2`` of {rescanned} is ``ses-1`` reoriented to LPS, shifted by
{shift} mm and given fresh Rician noise (2 % of the 99th percentile): the same brain, so its
two brain ages should agree to within the pipeline's rescan noise.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--derivatives", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/demo-work"))
    parser.add_argument("--layers", type=int, default=1)
    opts = parser.parse_args()
    sources = pd.read_csv(DEMO / "sources.tsv", sep="\t")
    out = DEMO / "bids"
    shutil.rmtree(out, ignore_errors=True)
    opts.work.mkdir(parents=True, exist_ok=True)
    (out).mkdir(parents=True)
    ixi = pd.read_csv(IXI / "participants.tsv", sep="\t").set_index("participant_id")
    rows, table, planted = [], [], {}
    for index, source in enumerate(sources.itertuples()):
        subject = source.participant_id
        anat = out / subject / "ses-1" / "anat"
        anat.mkdir(parents=True)
        stem = f"{subject}_ses-1_T1w"
        raw_file = IXI / source.source / "anat" / f"{source.source}_T1w.nii.gz"
        shutil.copyfile(raw_file.with_suffix("").with_suffix(".json"), anat / f"{stem}.json")
        patient = source.role.startswith("patient")
        if patient:
            raw = nib.load(str(raw_file))
            t1w = derivative(opts.derivatives, source.source, "desc-preproc_T1w.nii.gz")
            mask = derivative(opts.derivatives, source.source, "desc-brain_mask.nii.gz")
            dseg_file = derivative(opts.derivatives, source.source, "dseg.nii.gz")
            region = temporal_labels_on(t1w, mask, opts.work)
            region_img = nib.Nifti1Image(region.astype(np.uint8), nib.load(str(t1w)).affine)
            on_raw = np.asarray(resample_from_to(region_img, raw, order=0).dataobj) > 0
            dseg = np.asarray(resample_from_to(nib.load(str(dseg_file)), raw, order=0).dataobj)
            image, facts = plant_atrophy(raw, dseg.astype(int), on_raw, opts.layers)
            image.to_filename(anat / f"{stem}.nii.gz")
            planted[subject] = facts
            what = (f"{source.source} with planted temporal atrophy: {facts['gm_removed_ml']} ml "
                    f"of grey matter removed ({facts['region_gm_loss_pct']} % of the regions' "
                    f"GM, {facts['total_gm_loss_pct']} % of all GM)")  # fmt:skip
        else:
            shutil.copyfile(raw_file, anat / f"{stem}.nii.gz")
            what = f"{source.source}, unchanged"
        rows.append(f"| {subject} | 1 | {source.age} | {what} |")
        info = ixi.loc[source.source]
        table.append({"participant_id": subject, "age": info["age"], "sex": info["sex"],
                      "site": info["site"], "group": "PT" if patient else "HC",
                      "source": f"IXI {source.source.removeprefix('sub-')}"})  # fmt:skip
        if "rescanned" in source.role:
            anat2 = out / subject / "ses-2" / "anat"
            anat2.mkdir(parents=True)
            rescan(nib.load(str(raw_file)), seed=index).to_filename(
                anat2 / f"{subject}_ses-2_T1w.nii.gz"
            )
            shutil.copyfile(anat / f"{stem}.json", anat2 / f"{subject}_ses-2_T1w.json")
            rows.append(f"| {subject} | 2 | {source.age} | rescan of ses-1 (LPS, shifted, "
                        "re-noised) |")  # fmt:skip
            rescanned = subject
    pd.DataFrame(table).to_csv(out / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    (out / "participants.json").write_text(json.dumps({
        "age": {"Description": "Age at scan", "Units": "year"},
        "sex": {"Description": "Sex", "Levels": {"F": "female", "M": "male"}},
        "site": {"Description": "Acquisition site (HH: Hammersmith Hospital)"},
        "group": {"Description": "Group", "Levels": {
            "HC": "healthy control (IXI scan as published)",
            "PT": "simulated patient: an IXI scan with planted temporal-lobe atrophy"}},
        "source": {"Description": "The IXI scan this one comes from"},
    }, indent=2) + "\n")  # fmt:skip
    (out / "dataset_description.json").write_text(json.dumps({
        "Name": "bids_brainage demo: real IXI scans, two with planted atrophy",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "License": "CC-BY-SA-3.0",
        "Authors": ["IXI dataset contributors"],
        "Acknowledgements": "IXI data: https://brain-development.org/ixi-dataset/ , licensed "
        "CC BY-SA 3.0; 2 mm uint8 copies as published in the CBICA/NiChart_Project repository "
        "history. Planted atrophy and rescan made by scripts/make_demo_dataset.py.",
        "HowToAcknowledge": "Acknowledge the IXI dataset, https://brain-development.org/ixi-dataset/",
    }, indent=2) + "\n")  # fmt:skip
    (out / "README").write_text(README.format(
        n=len(rows), m=len(sources), rows="\n".join(rows), layers=opts.layers,
        rescanned=rescanned, shift=" / ".join(f"{s:+g}" for s in RESCAN_SHIFT_MM)))  # fmt:skip
    (out / ".bidsignore").write_text("")
    print(json.dumps(planted, indent=2))


if __name__ == "__main__":
    main()
