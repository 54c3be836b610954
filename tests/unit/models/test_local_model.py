"""Local brain-age U-Net building blocks: sliding-window stitching, shapes, loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bids_brainage.models.local import (
    LocalUNet,
    aux_weight,
    local_loss,
    sliding_window,
    window_starts,
)


def test_window_starts_cover_the_axis():
    assert window_starts(10, 4, 2) == [0, 2, 4, 6]
    assert window_starts(11, 4, 2) == [0, 2, 4, 6, 7]
    assert window_starts(3, 4, 2) == [0]


@pytest.mark.parametrize("shape", [(13, 17, 11), (5, 6, 7), (24, 24, 24)])
def test_stitching_reproduces_constant_and_identity_models_everywhere(shape):
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(2, *shape)).astype(np.float32)
    calls = []

    def constant(blocks):
        calls.append(len(blocks))
        return np.full(blocks.shape[:1] + blocks.shape[2:], 42.5, np.float32)

    out = sliding_window(volume, constant, window=8, core=4, batch_size=5)
    assert out.shape == shape
    np.testing.assert_array_equal(out, 42.5)  # exact, and so every voxel was covered
    assert max(calls) <= 5

    def identity(blocks):  # a voxel's prediction is its own first channel
        return blocks[:, 0]

    np.testing.assert_allclose(sliding_window(volume, identity, window=8, core=4), volume[0],
                               rtol=0, atol=1e-6)  # fmt:skip


def test_stitching_rejects_odd_margins():
    with pytest.raises(ValueError, match="even margin"):
        sliding_window(np.zeros((1, 4, 4, 4), np.float32), lambda b: b[:, 0], 8, 3)


def test_unet_shapes_and_years():
    torch.manual_seed(0)
    net = LocalUNet(in_channels=2, widths=(4, 8, 8), age_mean=50.0, age_sd=15.0).eval()
    with torch.no_grad():
        voxel, aux = net(torch.rand(3, 2, 16, 20, 12))
    assert voxel.shape == (3, 16, 20, 12)
    assert [a.shape for a in aux] == [(3,), (3,)]
    assert 0 < float(voxel.mean()) < 100  # outputs are in years around the training mean


def test_loss_is_masked_voxel_mae_plus_decaying_block_terms():
    voxel = torch.full((1, 2, 2, 2), 30.0)
    mask = torch.zeros((1, 2, 2, 2))
    mask[0, 0] = 1  # 4 voxels inside
    voxel[0, 1] = 1000.0  # outside the mask: ignored
    age = torch.tensor([40.0])
    aux = [torch.tensor([44.0]), torch.tensor([38.0])]
    assert float(local_loss(voxel, aux, age, mask, 0.5)) == pytest.approx(10 + 0.5 * (4 + 2))
    assert float(local_loss(voxel, aux, age, mask, 0.0)) == pytest.approx(10)
    assert [aux_weight(s, 100) for s in (0, 50, 100, 200)] == [1.0, 0.5, 0.0, 0.0]


def test_local_model_learns_a_planted_age_signal():
    """GM fades with age in one half of the brain only: the local map must follow age there."""
    from bids_brainage.models.local import LocalAgeModel

    rng = np.random.default_rng(0)
    shape = (24, 24, 24)
    inside = np.zeros(shape, bool)
    inside[4:20, 4:20, 4:20] = True
    ages = rng.uniform(20, 80, 24)
    X = np.zeros((24, 2, *shape), np.float32)
    for i, age in enumerate(ages):
        X[i, 0][inside] = 0.6
        X[i, 0, 4:12][inside[4:12]] = 1.0 - age / 100  # the age signal, left half only
        X[i, 1][inside] = 0.4
        X[i] += rng.normal(0, 0.01, X[i].shape) * inside
    model = LocalAgeModel({"widths": [4, 8, 8], "window": 16, "core": 8, "steps": 150,
                           "batch_size": 4, "input_mm": 4.0}, threads=2,
                          random_state=1)  # fmt:skip
    model.fit(X[:18], ages[:18])
    maps = model.predict_maps(X[18:])
    assert maps.shape == (6, *shape) and np.isfinite(maps).all()
    predicted = model.predict(X[18:])
    baseline = np.abs(np.median(ages[:18]) - ages[18:]).mean()
    assert np.abs(predicted - ages[18:]).mean() < baseline


@pytest.mark.integration
def test_local_kind_trains_through_the_command_and_round_trips(feature_dataset, tmp_path):
    """group --train-model ... --model-kind local-unet: bundle, card with the voxel-level CV
    figures, MAE map; reloading gives bit-identical maps."""
    import json

    from bids_brainage.cli.run import main
    from bids_brainage.models.bundle import load_bundle
    from bids_brainage.models.inputs import ScanFeatures
    from bids_brainage.utils.derivatives import ScanDerivatives

    out = feature_dataset["derivatives"]
    code = main([str(feature_dataset["bids"]), str(out), "group", "--train-model", "syn-local",
                 "--model-kind", "local-unet", "--max-epochs", "2", "--cv-folds", "3",
                 "-w", str(tmp_path / "work")])  # fmt:skip
    assert code == 0
    folder = out / "models" / "syn-local"
    card = json.loads((folder / "model.json").read_text())
    local = card["local_cross_validation"]
    assert local["scans"] == 40 and local["median_within_participant_mae"] > 0
    assert (folder / "voxel_mae.nii.gz").is_file() and "voxel_mae.nii.gz" in card["files"]
    assert "Median within-participant MAE" in (folder / "model_card.md").read_text()
    bundle = load_bundle(folder, threads=1)
    features = ScanFeatures(
        **ScanDerivatives(out, {"subject": "s000"}, "MNI152NLin2009cSym", "6").model_inputs()
    )
    first, second = bundle.predict_local(features), load_bundle(folder).predict_local(features)
    np.testing.assert_array_equal(first, second)
    assert first.shape == tuple(card["contract"]["grid"]["shape"])
    assert np.isfinite(bundle.predict_scan(features))


def test_local_outputs_mask_pad_and_roi_means_by_hand():
    from bids_brainage.models.local import local_outputs

    local = np.array([[[50.0, 60.0], [70.0, 99.0]]])
    mask = np.array([[[True, True], [True, False]]])
    labels = np.array([[[1, 1], [2, 2]]])
    masked, pad, table = local_outputs(local, mask, labels, ["A", "B", "C"], 55.0)
    assert masked[0, 1, 1] == 0 and pad[0, 1, 1] == 0 and pad[0, 0, 0] == -5
    rows = table.set_index("roi")
    assert rows.loc["Whole brain", "mean_local_brainage"] == pytest.approx(60.0)
    assert rows.loc["A", "mean_local_brainage"] == pytest.approx(55.0)
    assert rows.loc["B", "n_voxels"] == 1 and rows.loc["B", "mean_local_brainage"] == 70.0
    assert rows.loc["A", "mean_local_pad"] == pytest.approx(0.0)
    assert rows.loc["C", "n_voxels"] == 0 and np.isnan(rows.loc["C", "mean_local_brainage"])
    _, no_pad, table = local_outputs(local, mask, labels, ["A", "B", "C"], None)
    assert no_pad is None and table["mean_local_pad"].isna().all()
