"""Model kinds, bundles (round trip, tampering, contracts, no pickle) and group-level training."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from bids_brainage.cli.run import main
from bids_brainage.models.bundle import (
    BundleError,
    load_bundle,
    resolve_bundle,
    save_bundle,
)
from bids_brainage.models.classical import block_average
from bids_brainage.models.inputs import ScanFeatures, load_inputs
from bids_brainage.models.kinds import make_estimator
from bids_brainage.models.training import cross_validate
from bids_brainage.utils.derivatives import ScanDerivatives

TEMPLATE = {"name": "MNI152NLin2009cSym", "resolution": 6}


def _design(feature_dataset, kind):
    truth = feature_dataset["truth"]
    features = [ScanFeatures(**ScanDerivatives(feature_dataset["derivatives"], {"subject": p[4:]},
                                               TEMPLATE["name"], "6").model_inputs())
                for p in truth["participant_id"]]  # fmt:skip
    return np.stack([load_inputs(f, kind) for f in features]), truth


def test_block_average_hand_example():
    volume = np.arange(2 * 2 * 4, dtype=float).reshape(2, 2, 4)
    out = block_average(volume, 2)
    assert out.shape == (1, 1, 2)
    assert out[0, 0, 0] == volume[:, :, :2].mean() and out[0, 0, 1] == volume[:, :, 2:].mean()
    padded = block_average(np.ones((3, 3, 3)), 2)  # zero padding at the far edges
    assert padded.shape == (2, 2, 2) and padded[0, 0, 0] == 1 and padded[1, 1, 1] == 1 / 8


@pytest.mark.parametrize("kind", ["hist-linear", "hist-gbm", "tissue-linear", "tissue-gpr"])
def test_classical_kinds_recover_age_better_than_the_median(feature_dataset, kind):
    input_kind = {"hist-linear": "histogram", "hist-gbm": "histogram", "tissue-linear": "tissue",
                  "tissue-gpr": "tissue"}  # fmt:skip
    X, truth = _design(feature_dataset, input_kind[kind])
    result = cross_validate(make_estimator(kind), X, truth["age"].to_numpy(),
                            truth["participant_id"], truth["site"], split="random",
                            n_splits=4, seed=0)  # fmt:skip
    metrics = result["metrics"]
    # boosting on 30 noisy 200-bin histograms learns less than the linear models (12 vs 14 y)
    margin = 0.95 if kind == "hist-gbm" else 0.8
    assert metrics["mae"]["mean"] < margin * metrics["baseline_mae"]["mean"]
    assert metrics["r"]["mean"] > (0.3 if kind == "hist-gbm" else 0.6)


def test_tissue_linear_chooses_its_downsampling_factor_by_inner_cv(feature_dataset):
    X, truth = _design(feature_dataset, "tissue")
    model = make_estimator("tissue-linear").fit(X, truth["age"].to_numpy())
    assert set(model.curve_) == set(model.factors)
    assert model.factor_ == min(model.curve_, key=model.curve_.get)


def test_tissue_gpr_predicts_as_scikit_learn_and_torch_and_survives_a_round_trip(
    feature_dataset, tmp_path
):
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, DotProduct

    X, truth = _design(feature_dataset, "tissue")
    y = truth["age"].to_numpy(float)
    model = make_estimator("tissue-gpr").fit(X[:24], y[:24])
    k = model.kernel_
    # the fitted kernel, fixed, in scikit-learn's own GP on the same scores (noise as alpha)
    kernel = (ConstantKernel(k["rbf_amplitude"]) * RBF(k["length_scale"])
              + ConstantKernel(k["linear_amplitude"]) * DotProduct(k["sigma_0"]))  # fmt:skip
    reference = GaussianProcessRegressor(kernel, alpha=k["noise"], optimizer=None).fit(
        model.train_scores_, (y[:24] - model.age_mean_) / model.age_sd_)  # fmt:skip
    small = block_average(X[24:], model.factor_).reshape(len(X) - 24, -1)[:, model.voxels_]
    expected = reference.predict(model._scores(small)) * model.age_sd_ + model.age_mean_
    np.testing.assert_allclose(model.predict(X[24:]), expected, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        as_torch = model.torch_predict(torch.as_tensor(X[24:], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(as_torch, expected, rtol=1e-6, atol=1e-6)
    card = {"name": "gpr", "kind": "tissue-gpr", "interval": {"halfwidth": 1, "coverage": 0.9}}
    reloaded = save_bundle(tmp_path / "gpr", card, model).estimator
    np.testing.assert_array_equal(reloaded.predict(X[24:]), model.predict(X[24:]))


@pytest.mark.parametrize("kind", ["slice-cnn", "resnet3d", "resnet2d-lstm"])
def test_network_kinds_train_save_and_reload_bit_identically(feature_dataset, kind, tmp_path):
    X, truth = _design(feature_dataset, "t1w")
    y = truth["age"].to_numpy()
    model = make_estimator(kind, affine=feature_dataset["affine"],
                           settings={"epochs": 2}, threads=1).fit(X[:12], y[:12])  # fmt:skip
    assert len(model.history_) == 2
    predicted = model.predict(X[12:16])
    assert predicted.shape == (4,) and np.all(np.isfinite(predicted))
    card = {"name": kind, "kind": kind, "interval": {"coverage": 0.9, "halfwidth": 9.0},
            "contract": {**TEMPLATE, "normalisation": "v2", "input": "t1w"}}  # fmt:skip
    bundle = save_bundle(tmp_path / kind, card, estimator=model)
    assert (tmp_path / kind / "weights.safetensors").exists()
    np.testing.assert_array_equal(bundle.estimator.predict(X[12:16]), predicted)
    for name, tensor in model.network_.state_dict().items():
        assert torch.equal(tensor, bundle.estimator.network_.state_dict()[name])
    # the differentiable form U-noise trains against gives the same ages, with input gradients
    inputs = torch.as_tensor(X[12:16]).requires_grad_(True)
    ages = bundle.torch_predict()(inputs)
    np.testing.assert_allclose(ages.detach().numpy(), predicted, rtol=1e-5, atol=1e-4)
    ages.sum().backward()
    assert inputs.grad is not None and float(inputs.grad.abs().sum()) > 0


@pytest.fixture(scope="module")
def trained(feature_dataset, tmp_path_factory):
    """A bundle of each classical kind trained through the command line."""
    work = tmp_path_factory.mktemp("train_work")
    out = feature_dataset["derivatives"]
    codes = {}
    for kind in ("hist-linear", "tissue-linear"):
        codes[kind] = main([str(feature_dataset["bids"]), str(out), "group", "--train-model",
                            f"syn-{kind}", "--model-kind", kind, "-w", str(work)])  # fmt:skip
    return out / "models", codes


def test_training_command_writes_bundle_card_predictions_and_figures(trained, feature_dataset):
    models, codes = trained
    assert set(codes.values()) == {0}
    bundle = models / "syn-tissue-linear"
    card = json.loads((bundle / "model.json").read_text())
    assert card["kind"] == "tissue-linear" and card["format"] == "bids_brainage-bundle"
    assert card["contract"]["tissue_scaling"] == "tiv"  # the default for tissue-map kinds
    assert set(card["cross_validation"]) == {"random", "site"}
    assert card["training_data"]["n_scans"] == 40
    for split in ("random", "site"):
        cv = card["cross_validation"][split]
        assert cv["metrics"]["mae"]["mean"] < cv["metrics"]["baseline_mae"]["mean"]
        assert set(cv["metrics"]["cs"]) == {str(a) for a in range(1, 11)}
        assert 0.6 <= cv["coverage"]["empirical"] <= 1.0
    assert len(card["cross_validation"]["random"]["learning_curve"]) == 4
    oof = pd.read_csv(bundle / "oof_predictions.tsv", sep="\t")
    assert len(oof) == 80 and set(oof["split"]) == {"random", "site"}
    assert np.allclose(oof["brain_pad"], oof["predicted_age"] - oof["age"], atol=1e-3)
    for figure in ("predicted_vs_age", "cumulative_score", "learning_curve", "downsampling_curve"):
        assert (bundle / "figures" / f"{figure}.png").stat().st_size > 1000
    text = (bundle / "model_card.md").read_text()
    assert "synthetic features" in text and "| site |" in text
    # the training scans' contrast, from their QC files, bounds contrast_outside_training_range
    ratios = [json.loads(f.read_text())["measures"] for f in feature_dataset["derivatives"].rglob(
        "sub-*_qc.json")]  # fmt:skip
    ratios = [m["gm_peak"] / m["wm_peak"] for m in ratios]
    contrast = card["training_data"]["contrast"]["gm_wm_peak_ratio"]
    assert (contrast["min"], contrast["max"], contrast["n"]) == (min(ratios), max(ratios), 40)
    assert contrast["median"] == pytest.approx(float(np.median(ratios)))
    assert "GM/WM intensity-peak ratio (contrast) 0.650–0.689" in text and "more than 0.05" in text
    cnrs = [json.loads(f.read_text())["measures"]["cnr_gm_wm"]
            for f in feature_dataset["derivatives"].rglob("sub-*_qc.json")]  # fmt:skip
    cnr = card["training_data"]["contrast"]["cnr_gm_wm"]
    assert (cnr["min"], cnr["max"], cnr["n"]) == (min(cnrs), max(cnrs), 40)
    assert "GM/WM contrast-to-noise ratio 4.00–5.95" in text and "more than 15% below" in text
    assert set(card["files"]) >= {"weights.safetensors", "model_card.md", "oof_predictions.tsv"}


def test_site_split_exposes_a_histogram_model_that_learnt_the_scanner(trained):
    """Seed 000: v1-like site offsets let a histogram model do well on a random split only."""
    card = json.loads((trained[0] / "syn-hist-linear" / "model.json").read_text())
    cv = card["cross_validation"]
    assert cv["site"]["metrics"]["mae"]["mean"] > cv["random"]["metrics"]["mae"]["mean"]


def test_bundle_reload_is_bit_identical_and_never_unpickles(
    trained, feature_dataset, monkeypatch, tmp_path
):
    X, _ = _design(feature_dataset, "tissue")
    path = trained[0] / "syn-tissue-linear"
    first = load_bundle(path).predict_inputs({"tissue": X})

    def refuse(*args, **kwargs):
        raise AssertionError("a bundle was unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    np.testing.assert_array_equal(load_bundle(path).predict_inputs({"tissue": X}), first)
    Xh, truth = _design(feature_dataset, "histogram")
    gbm = make_estimator("hist-gbm").fit(Xh, truth["age"].to_numpy())
    card = {"name": "g", "kind": "hist-gbm", "interval": {"coverage": 0.9, "halfwidth": 9.0},
            "contract": {**TEMPLATE, "normalisation": "v2", "input": "histogram"}}  # fmt:skip
    reloaded = save_bundle(tmp_path / "g", card, estimator=gbm)
    np.testing.assert_array_equal(reloaded.predict_inputs({"histogram": Xh}), gbm.predict(Xh))


def test_tampered_truncated_or_foreign_bundles_are_refused(trained, tmp_path):
    source = trained[0] / "syn-tissue-linear"
    tampered = shutil.copytree(source, tmp_path / "tampered")
    weights = tampered / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="weights.safetensors: checksum differs"):
        load_bundle(tampered)
    missing = shutil.copytree(source, tmp_path / "missing")
    (missing / "weights.safetensors").unlink()
    with pytest.raises(BundleError, match="listed in model.json but missing"):
        load_bundle(missing)
    with pytest.raises(BundleError, match="no model.json"):
        load_bundle(tmp_path)
    with pytest.raises(BundleError, match="made for resolution 6, but this run uses 2"):
        load_bundle(source, template={"name": TEMPLATE["name"], "resolution": 2})
    with pytest.raises(BundleError, match="made for template"):
        load_bundle(source, template={"name": "MNI152NLin2009cAsym", "resolution": 6})


def test_skops_file_with_foreign_types_is_refused(tmp_path):
    import skops.io as sio
    from sklearn.linear_model import Ridge

    from bids_brainage.models.classical import HistogramBoosting

    data = sio.dumps({"model": Ridge().fit([[0.0], [1.0]], [0.0, 1.0]), "x": np.ones(2)})
    with pytest.raises(ValueError, match="skops file"):
        HistogramBoosting.from_state(data, {})


def test_ensemble_averages_members_with_identical_folds(trained, feature_dataset, tmp_path):
    models = trained[0]
    code = main([str(feature_dataset["bids"]), str(feature_dataset["derivatives"]), "group",
                 "--train-model", "syn-ensemble", "--model-kind", "ensemble",
                 "--ensemble-members", str(models / "syn-hist-linear"),
                 str(models / "syn-tissue-linear"), "-w", str(tmp_path / "w")])  # fmt:skip
    assert code == 0
    ensemble = load_bundle(models / "syn-ensemble")
    oofs = [pd.read_csv(models / m / "oof_predictions.tsv", sep="\t")
            for m in ("syn-hist-linear", "syn-tissue-linear")]  # fmt:skip
    mine = pd.read_csv(models / "syn-ensemble" / "oof_predictions.tsv", sep="\t")
    np.testing.assert_allclose(mine["predicted_age"],
                               (oofs[0]["predicted_age"] + oofs[1]["predicted_age"]) / 2,
                               atol=2e-4)  # fmt:skip
    Xh, _ = _design(feature_dataset, "histogram")
    Xt, _ = _design(feature_dataset, "tissue")
    members = [load_bundle(models / m) for m in ("syn-hist-linear", "syn-tissue-linear")]
    expected = (members[0].predict_inputs({"histogram": Xh})
                + members[1].predict_inputs({"tissue": Xt})) / 2  # fmt:skip
    np.testing.assert_allclose(ensemble.predict_inputs({"histogram": Xh, "tissue": Xt}), expected)


def test_training_refuses_too_few_scans_and_bad_requests(feature_dataset, tmp_path, capsys):
    args = [str(feature_dataset["bids"]), str(feature_dataset["derivatives"]), "group",
            "-w", str(tmp_path / "w")]  # fmt:skip
    code = main([*args, "--train-model", "few", "--model-kind", "hist-linear",
                 "--participant-label", *[f"s{i:03d}" for i in range(5)]])  # fmt:skip
    assert code == 1
    assert "5 scans usable for training" in capsys.readouterr().err
    requests = {
        "needs --model-kind": ["--train-model", "x"],
        "../x": ["--train-model", "../x", "--model-kind", "hist-linear"],
        "at least two": ["--model-kind", "ensemble", "--train-model", "e",
                        "--ensemble-members", "only-one"],
    }  # fmt:skip
    for reason, request in requests.items():
        assert main([*args, *request]) == 64
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and reason in lines[0], (reason, lines)
    assert not (feature_dataset["derivatives"] / "models" / "few").exists()


def test_model_option_names_a_packaged_bundle_or_fails_clearly(tmp_path):
    with pytest.raises(BundleError, match="no such bundle directory"):
        resolve_bundle(str(tmp_path / "nothing-here"))


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["slice-cnn", "resnet3d", "resnet2d-lstm"])
def test_network_kinds_learn_age_better_than_the_median(feature_dataset, kind):
    """With the kind's own settings (augmentation included), 30 training brains, 10 held out."""
    X, truth = _design(feature_dataset, "t1w")
    y = truth["age"].to_numpy()
    model = make_estimator(kind, affine=feature_dataset["affine"], threads=2)
    model.fit(X[:30], y[:30])
    mae = np.mean(np.abs(model.predict(X[30:]) - y[30:]))
    baseline = np.mean(np.abs(np.median(y[:30]) - y[30:]))
    assert mae < baseline, (mae, baseline)


def test_a_bundle_trained_on_nuisance_copies_states_its_block_size_rule(feature_dataset, tmp_path):
    """The card of a tissue-linear bundle trained with copies gives its block sizes and the
    percentile per block size: copies identical to their sources move by 0 y.
    """
    from bids_brainage.config import ModelSettings
    from bids_brainage.group.collect import collect_scan_table, read_dataset_description
    from bids_brainage.group.training import TrainingRun, run_training

    table, _ = collect_scan_table(feature_dataset["bids"], feature_dataset["derivatives"])
    copies = table.iloc[:6].assign(source_participant=table["participant_id"].iloc[:6])
    run = TrainingRun(ModelSettings(train_model="syn-aug", model_kind="tissue-linear"), tmp_path,
                      0, 1, copies)  # fmt:skip
    bundle = run_training(run, table, read_dataset_description(feature_dataset["bids"]))
    card = json.loads((bundle / "model.json").read_text())
    assert card["nuisance_training"]["copies"] == 6
    assert card["params"]["copy_shift"]
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in card["params"]["copy_shift"].values())
    text = (bundle / "model_card.md").read_text()
    assert "Nuisance copies in training" in text and "95th percentile of the change" in text
    # tissue-linear averages its ridges on 8, 12 and 16 mm blocks; the card names them
    assert [m["factor"] for m in card["params"]["members"]] == [4, 6, 8]
    assert "mean of the ridges fitted on 8 mm" in text
