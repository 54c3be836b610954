"""U-noise (seed 003): differentiable predictors, the noise model, its bundle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bids_brainage.models.classical import TissueLinear
from bids_brainage.models.unoise import NoiseUNet, UNoise


def test_tissue_linear_as_a_torch_function_equals_its_predict():
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (30, 2, 13, 14, 11)).astype(np.float32)
    y = X[:, 0, :6].mean(axis=(1, 2, 3)) * 80 + rng.normal(0, 1, 30)
    model = TissueLinear(factors=(3,)).fit(X, y)
    with torch.no_grad():
        via_torch = model.torch_predict(torch.as_tensor(X)).numpy()
    np.testing.assert_allclose(via_torch, model.predict(X), rtol=1e-5, atol=1e-3)


def test_noise_unet_shapes_and_swappable_head():
    net = NoiseUNet(2, (4, 4, 8), out_channels=2)
    assert net(torch.rand(1, 2, 8, 12, 16)).shape == (1, 2, 8, 12, 16)
    net.head = torch.nn.Conv3d(4, 1, 1)
    assert net(torch.rand(1, 2, 8, 12, 16)).shape == (1, 1, 8, 12, 16)


def planted_scans(n=16, seed=0):
    """Brains whose 'age' is read off the GM of one cube only."""
    rng = np.random.default_rng(seed)
    shape = (24, 24, 24)
    X = np.zeros((n, 2, *shape), np.float32)
    X[:, :, 2:22, 2:22, 2:22] = rng.uniform(0.2, 0.8, (n, 2, 20, 20, 20))
    region = (slice(None), 0, slice(4, 12), slice(4, 12), slice(4, 12))

    def planted(x):  # a frozen "prediction model" that looks only at the region
        return 100 * (1 - x[region].mean(dim=(1, 2, 3)))

    ages = planted(torch.as_tensor(X)).numpy()
    inside = np.zeros(shape, bool)
    inside[4:12, 4:12, 4:12] = True
    return X, ages, planted, inside


def test_unoise_finds_the_region_the_planted_model_depends_on():
    X, ages, planted, region = planted_scans()
    model = UNoise({"widths": [4, 8, 8], "pretrain_steps": 20, "steps": 150, "batch_size": 4},
                   threads=2)  # fmt:skip
    model.fit(X, ages, planted)
    brain = X.sum(axis=1) > 0.1
    importance = model.importance(X, brain).mean(axis=0)
    assert importance.shape == region.shape
    assert (importance[~brain.any(axis=0)] == 0).all()
    far = brain.all(axis=0) & ~region
    far[:14] = False  # well away from the region (the mask is drawn on a 4 mm grid)
    assert importance[region].mean() > importance[far].mean() + 0.2
    check = model.noisy_error(X, ages, planted)
    assert check["clean_mae"] < 1e-3 and check["noisy_mae"] < 5


@pytest.mark.integration
def test_unoise_kind_trains_through_the_command_and_round_trips(feature_dataset, tmp_path):
    """group --train-model NAME --model-kind unoise --explain-model BUNDLE: card, maps that
    reload bit-identically; a model that is not differentiable is refused in one line."""
    import json

    from bids_brainage.cli.run import main
    from bids_brainage.models.bundle import load_bundle
    from bids_brainage.models.inputs import ScanFeatures
    from bids_brainage.utils.derivatives import ScanDerivatives

    out, work = feature_dataset["derivatives"], str(tmp_path / "work")
    bids = str(feature_dataset["bids"])
    for name, kind in (("syn-tl", "tissue-linear"), ("syn-hist", "hist-linear")):
        if not (out / "models" / name).exists():
            assert main([bids, str(out), "group", "--train-model", name, "--model-kind", kind,
                         "-w", work]) == 0  # fmt:skip
    code = main([bids, str(out), "group", "--train-model", "syn-unoise", "--model-kind", "unoise",
                 "--explain-model", str(out / "models" / "syn-tl"), "--max-epochs", "2",
                 "-w", work])  # fmt:skip
    assert code == 0
    folder = out / "models" / "syn-unoise"
    card = json.loads((folder / "model.json").read_text())
    assert card["explains"]["name"] == "syn-tl" and card["contract"]["input"] == "tissue"
    validation = card["validation"]
    assert "mean_importance.nii.gz" in card["files"]
    # the learnt noise may cost accuracy but never improves it much: the clean MAE is the floor
    assert validation["noisy_mae"] >= validation["clean_mae"] - 0.5
    assert validation["scans"] + validation["train_scans"] == card["training_data"]["n_scans"]
    assert "syn-tl" in (folder / "model_card.md").read_text()
    features = ScanFeatures(
        **ScanDerivatives(out, {"subject": "s000"}, "MNI152NLin2009cSym", "6").model_inputs()
    )
    grid = tuple(card["contract"]["grid"]["shape"])
    brain = np.ones(grid, bool)
    first = load_bundle(folder).predict_importance(features, brain)
    second = load_bundle(folder).predict_importance(features, brain)
    np.testing.assert_array_equal(first, second)
    assert first.shape == grid and 0 <= first.min() and first.max() <= 1
    # importance is 1 - the tolerated-noise mask, and tells voxels apart
    bundle = load_bundle(folder)  # reads the inputs as the explained model does (scaled by TIV)
    assert card["contract"]["tissue_scaling"] == "tiv"
    mask = bundle.estimator.predict_maps(bundle.load_inputs(features, "tissue")[None])
    np.testing.assert_allclose(first, 1 - mask[0], atol=1e-6)
    assert first.std() > 1e-3
    code = main([bids, str(out), "group", "--train-model", "bad", "--model-kind", "unoise",
                 "--explain-model", str(out / "models" / "syn-hist"), "-w", work])  # fmt:skip
    assert code != 0 and not (out / "models" / "bad").exists()
