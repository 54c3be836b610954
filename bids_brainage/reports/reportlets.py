"""Per-scan QC reportlets as the NiPreps build them (nireports): an SVG mosaic of the brain mask
and tissue boundaries, and the flicker of the registered scan against the template (hover to
switch), as in sMRIPrep's and fMRIPrep's reports. Each SVG is self-contained.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

import nibabel as nb

from ..utils.io import atomic_path

MOSAIC_CUTS = 7  # per view, nireports' default for its segmentation mosaics
# What makes two renderings of the same data differ: nireports' uuid4 element ids and
# matplotlib's creation date (its other ids are hashed with the rcParam svg.hashsalt).
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
DATE = re.compile(r"<dc:date>[^<]*</dc:date>")


@contextmanager
def reproducible_svg(target: Path):
    """Yield a temporary path to write an SVG to; put it at ``target`` with the same bytes
    for the same data (run-to-run ids and dates replaced), atomically.
    """
    import matplotlib

    with atomic_path(target) as tmp, matplotlib.rc_context({"svg.hashsalt": "bids_brainage"}):
        yield tmp
        text = DATE.sub("", tmp.read_text())
        ids: dict[str, str] = {}
        text = UUID.sub(lambda m: ids.setdefault(m.group(0), f"{target.stem}-{len(ids)}"), text)
        tmp.write_text(text)


def segmentation_reportlet(t1w: Path, brain_mask: Path, gm: Path, wm: Path, target: Path) -> Path:
    """Brain mask (red), GM (yellow) and WM (cyan) boundaries over the preprocessed T1w."""
    from nireports.reportlets.mosaic import plot_segs
    from nireports.reportlets.utils import compose_view

    with reproducible_svg(target) as tmp:
        views = plot_segs(image_nii=str(t1w), seg_niis=[str(brain_mask), str(gm), str(wm)],
                          bbox_nii=str(brain_mask), colors=["r", "y", "c"],
                          compress=False)  # fmt:skip
        compose_view(bg_svgs=views, fg_svgs=None, out_file=tmp)
    return target


def registration_reportlet(registered: nb.Nifti1Image, template: nb.Nifti1Image,
                           template_mask: nb.Nifti1Image, template_name: str,
                           target: Path) -> Path:  # fmt:skip
    """The template and the scan registered to it, one over the other (the template's brain
    outline drawn on both): a good registration barely moves when the view flickers.
    """
    from nireports.reportlets.mosaic import plot_registration
    from nireports.reportlets.utils import compose_view, cuts_from_bbox

    cuts = cuts_from_bbox(template_mask, cuts=MOSAIC_CUTS)
    common = {"estimate_brightness": True, "cuts": cuts, "contour": template_mask,
              "compress": False}  # fmt:skip
    with reproducible_svg(target) as tmp:
        fixed = plot_registration(template, "fixed-image", label=template_name, **common)
        moving = plot_registration(registered, "moving-image", label="T1w, registered",
                                   **common)  # fmt:skip
        compose_view(bg_svgs=fixed, fg_svgs=moving, out_file=tmp)
    return target
