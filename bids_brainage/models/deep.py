"""Training and inference of the seeds' CNNs on v2-normalised template-space T1w volumes.

Settings follow the seeds where CPU time allows (MAE loss, Adam, learning rate halved at fixed
epochs, seed 001; augmentation by rotation, zoom, blur and local intensity changes, seed 000)
and say where they do not:

- batches of 8 and a larger learning rate instead of batches of 1, with batch instead of
  instance normalisation (see ``networks``);
- narrower layers; 40 epochs, the rate halved every 10, instead of 60 and 15;
- 4 mm input for the 3-D ResNet; every other axial slice, at 40 × 40, for the 2-D ResNet + LSTM;
- an inner validation split for early stopping.
"""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import torch
from torch.nn import functional as F

from .networks import build_network
from .torch_base import TorchEstimator

DEFAULTS = {
    "slice-cnn": {"widths": [16, 32, 64, 96, 128], "slab_mm": [12.0, 20.0], "augment": True,
                  "norm": "batch"},
    "resnet3d": {"widths": [8, 16, 32, 64], "input_mm": 4.0, "augment": False, "norm": "batch"},
    "resnet2d-lstm": {"widths": [8, 16, 32, 64], "slice_size": 40, "slice_step": 2, "pool": 3,
                      "hidden": 64, "augment": False, "norm": "batch"},
    "training": {"epochs": 40, "batch_size": 8, "learning_rate": 1e-3, "halve_every": 10,
                 "patience": 10, "validation_fraction": 0.15},
}  # fmt:skip


def crop_box(volumes: np.ndarray, multiple: int = 8) -> list[list[int]]:
    """Bounding box of voxels non-zero in the mean training volume, widened to a multiple."""
    mean = np.mean(volumes.reshape(-1, *volumes.shape[-3:]), axis=0)
    inside = np.argwhere(mean > 0.05)
    box = []
    for axis, size in enumerate(mean.shape):
        low, high = int(inside[:, axis].min()), int(inside[:, axis].max()) + 1
        width = min(size, math.ceil((high - low) / multiple) * multiple)
        low = max(0, min(low - (width - (high - low)) // 2, size - width))
        box.append([low, low + width])
    return box


def slab_indices(affine: np.ndarray, slab_mm) -> list[int]:
    """Axial slice indices of the template grid between two world z coordinates (mm)."""
    inverse = np.linalg.inv(np.asarray(affine, float))
    first, last = (int(round((inverse @ [0, 0, z, 1])[2])) for z in slab_mm)
    return list(range(min(first, last), max(first, last) + 1))


def network_input(volumes: np.ndarray, kind: str, params: dict) -> torch.Tensor:
    """(N, 1, X, Y, Z) template-space volumes → the tensor a network of ``kind`` takes."""
    (x0, x1), (y0, y1), (z0, z1) = params["crop"]
    data = torch.as_tensor(volumes, dtype=torch.float32).reshape(-1, *volumes.shape[-3:])
    if kind == "slice-cnn":
        return data[:, x0:x1, y0:y1, params["slab"]].permute(0, 3, 1, 2).contiguous()
    cropped = data[:, x0:x1, y0:y1, z0:z1]
    if kind == "resnet3d":  # 4 mm voxels: a 2 mm ResNet-18 takes hours per epoch on a CPU
        return F.avg_pool3d(cropped[:, None], params["downsample"]).contiguous()
    if kind == "resnet2d-lstm":  # axial slices resized to slice_size² (seed 001: 50 × 50)
        cropped = cropped[..., :: params["slice_step"]]
        n, sx, sy, sz = cropped.shape
        slices = cropped.permute(0, 3, 1, 2).reshape(n * sz, 1, sx, sy)
        size = params["slice_size"]
        small = F.interpolate(slices, size=(size, size), mode="bilinear", align_corners=False)
        return small.reshape(n, sz, size, size)
    raise ValueError(f"{kind!r} is not a network kind")


def augment_slices(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Seed 000's augmentation of 2-D slabs: rotation (±5°), zoom (±5 %), Gaussian blur and
    smooth local intensity changes (±4 %), drawn independently per scan.

    Amplitudes are mild because age itself changes v2 intensities by only a few per cent:
    with ±10° and ±10 % the synthetic-data slice CNN was no better than the median.
    """
    n = batch.shape[0]
    uniform = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    angle = (uniform(n) - 0.5) * math.radians(10)
    zoom = 1 + (uniform(n) - 0.5) * 0.1
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) / zoom
    theta[:, 0, 1] = -torch.sin(angle) / zoom
    theta[:, 1, 0] = torch.sin(angle) / zoom
    theta[:, 1, 1] = torch.cos(angle) / zoom
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    blur = uniform(n) < 0.2
    if blur.any():
        kernel = torch.tensor([0.25, 0.5, 0.25])
        kernel2d = (kernel[:, None] * kernel[None, :]).expand(out.shape[1], 1, 3, 3)
        blurred = F.conv2d(out[blur], kernel2d, padding=1, groups=out.shape[1])
        out = out.clone()
        out[blur] = blurred
    field = 1 + 0.08 * (uniform(n, 1, 4, 4) - 0.5)
    field = F.interpolate(field, size=out.shape[-2:], mode="bilinear", align_corners=False)
    return out * field


class DeepAgeModel(TorchEstimator):
    """A CNN age regressor on v2-normalised template-space T1w volumes; one subclass per kind."""

    kind = ""

    def __init__(self, affine=None, settings=None, threads=2, random_state=0):
        self.affine = affine  # the grid of the training inputs: slabs are in world coordinates
        self.settings = settings
        self.threads = threads
        self.random_state = random_state

    @classmethod
    def for_grid(cls, affine=None, *, settings=None, threads=2, random_state=0):
        return cls(affine=affine, settings=settings, threads=threads, random_state=random_state)

    def _configure(self, volumes):
        self.params_["crop"] = crop_box(volumes)
        if self.kind == "resnet3d":
            voxel_mm = float(np.abs(self.affine[0][0])) if self.affine is not None else 2.0
            self.params_["downsample"] = max(1, round(self.params_["input_mm"] / voxel_mm))
        if self.kind == "slice-cnn":
            self.params_["slab"] = slab_indices(self.affine, self.params_["slab_mm"])
            self.params_["n_slices"] = len(self.params_["slab"])
        if self.kind == "resnet2d-lstm":
            (z0, z1) = self.params_["crop"][2]
            self.params_["n_slices"] = len(range(z0, z1, self.params_["slice_step"]))

    def fit(self, X, y):
        rng = self._start_fit()
        generator = torch.Generator().manual_seed(self.random_state)
        self.params_ = copy.deepcopy(DEFAULTS[self.kind])
        self.training_ = {**copy.deepcopy(DEFAULTS["training"]), **(self.settings or {})}
        X, y = np.asarray(X, np.float32), np.asarray(y, np.float32)
        self._configure(X)
        order = rng.permutation(len(y))
        n_val = max(1, int(round(self.training_["validation_fraction"] * len(y))))
        val, train = order[:n_val], order[n_val:]
        inputs = network_input(X, self.kind, self.params_)
        targets = torch.as_tensor(y)
        self.network_ = build_network(self.kind, self.params_)
        self.network_.head.age_mean.fill_(float(y[train].mean()))
        self.network_.head.age_sd.fill_(float(y[train].std() or 1.0))
        rate = self.training_["learning_rate"]
        optimiser = torch.optim.Adam(self.network_.parameters(), lr=rate)
        schedule = torch.optim.lr_scheduler.StepLR(optimiser, self.training_["halve_every"], 0.5)
        best, best_state, waited = math.inf, None, 0
        self.history_ = []
        batch_size = self.training_["batch_size"]
        for epoch in range(self.training_["epochs"]):
            self.network_.train()
            shuffled = train[rng.permutation(len(train))]
            losses = []
            for start in range(0, len(shuffled), batch_size):
                index = torch.as_tensor(shuffled[start : start + batch_size])
                batch = inputs[index]
                if self.params_.get("augment"):
                    batch = augment_slices(batch, generator)
                loss = F.l1_loss(self.network_(batch), targets[index])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                losses.append(loss.item() * len(index))
            schedule.step()
            val_mae = float(np.mean(np.abs(self._predict_tensor(inputs[val]) - y[val])))
            self.history_.append({"epoch": epoch + 1, "train_mae": sum(losses) / len(train),
                                  "validation_mae": val_mae})  # fmt:skip
            logging.getLogger("bids_brainage").info(
                "%s epoch %d/%d: training MAE %.2f, validation MAE %.2f", self.kind, epoch + 1,
                self.training_["epochs"], sum(losses) / len(train), val_mae)  # fmt:skip
            if val_mae < best:
                best, best_state, waited = val_mae, copy.deepcopy(self.network_.state_dict()), 0
            else:
                waited += 1
                if waited >= self.training_["patience"]:
                    break
        self.network_.load_state_dict(best_state)
        self.validation_ = {
            "indices": val.tolist(),
            "mae": best,
            "residuals": (self._predict_tensor(inputs[val]) - y[val]).tolist(),
        }
        return self

    @torch.no_grad()
    def _predict_tensor(self, inputs: torch.Tensor, batch_size: int = 8) -> np.ndarray:
        self.network_.eval()
        starts = range(0, len(inputs), batch_size)
        out = [self.network_(inputs[i : i + batch_size]) for i in starts]
        return torch.cat(out).numpy().astype(np.float64)

    def predict(self, X):
        self._start_predict()
        return self._predict_tensor(network_input(np.asarray(X, np.float32), self.kind,
                                                  self.params_))  # fmt:skip

    def torch_predict(self, X: torch.Tensor) -> torch.Tensor:
        """Ages as a differentiable function of (N, 1, X, Y, Z) volumes (U-noise)."""
        self.network_.eval()
        return self.network_(network_input(X, self.kind, self.params_)).to(X.dtype)

    def _build_network(self, tensors):
        return build_network(self.kind, self.params_)

    def _state_params(self):
        return {"network": self.params_, "training": self.training_,
                "epochs_run": len(self.history_)}  # fmt:skip

    def _restore_params(self, params):
        self.params_ = params["network"]
        self.training_ = {**DEFAULTS["training"], **params["training"]}
        self.history_ = []


class SliceCNNAge(DeepAgeModel):
    """Seed 000's 2-D CNN on a slab of axial slices."""

    kind = "slice-cnn"


class ResNet3dAge(DeepAgeModel):
    """Seed 001's 3-D ResNet-18."""

    kind = "resnet3d"


class ResNet2dLSTMAge(DeepAgeModel):
    """Seed 001's 2-D ResNet-18 on each axial slice, an LSTM over the slices."""

    kind = "resnet2d-lstm"
