"""Local (voxel-wise) brain age: seed 002's U-Net and its sliding-window inference.

The network follows seed 002 §2.5 — two 3x3x3 convolutions per scale with leaky ReLU (0.2),
2x2x2 average pooling down, 2x2x2 upsampling up, a squeeze-and-excitation unit after every
up-path convolution block, a voxel-level output and two block-level auxiliary heads (global
average pooling + dense) whose loss weights decay to zero. Scaled down so it trains on two CPU
cores: 4 mm input instead of 1.5 mm, 2 scales below the input instead of 3, widths 4/8/16
instead of 64/128/256, 150 passes of 8 random 20^3 blocks (80 mm) per scan instead of 500 000
iterations of 32 blocks, Adam at 1e-3 instead of 1e-4, batch normalisation after every
convolution (the seed names none; without it the small network settled on the mean age on IXI:
test MAE 15.0 against a 15.6 baseline after 300 steps, 9.7 with it after 2000), and
"same" padding with only the central core of each block kept (the seed's valid convolutions
turn a 52^3 block into a 12^3 prediction; here a block predicts its central half per axis).

``sliding_window`` stitches overlapping blocks over a whole volume: each block's core is added
into a sum and a count, so overlapping predictions are averaged, a constant model is reproduced
exactly, and padding makes every voxel fall in some core.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from .torch_base import TorchEstimator

LEAK = 0.2


class SqueezeExcite(nn.Module):
    """Channel attention (Hu et al., 2018): global average → bottleneck → sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(),
                                  nn.Linear(hidden, channels), nn.Sigmoid())  # fmt:skip

    def forward(self, x):
        weights = self.gate(x.mean(dim=(2, 3, 4)))
        return x * weights[:, :, None, None, None]


class DoubleConv(nn.Module):
    """Two 3x3x3 convolutions, each with leaky ReLU (0.2), optionally batch-normalised;
    optionally squeeze-and-excite.
    """

    def __init__(self, cin: int, cout: int, excite: bool = False, norm: bool = False):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1)
        self.norm1 = nn.BatchNorm3d(cout) if norm else nn.Identity()
        self.norm2 = nn.BatchNorm3d(cout) if norm else nn.Identity()
        self.excite = SqueezeExcite(cout) if excite else None

    def forward(self, x):
        x = F.leaky_relu(self.norm1(self.conv1(x)), LEAK)
        x = F.leaky_relu(self.norm2(self.conv2(x)), LEAK)
        return self.excite(x) if self.excite is not None else x


class LocalUNet(nn.Module):
    """GM/WM block → local brain age at every voxel, plus two block-level auxiliary ages."""

    def __init__(self, in_channels: int = 2, widths=(8, 16, 32), age_mean: float = 0.0,
                 age_sd: float = 1.0, norm: bool = True):  # fmt:skip
        super().__init__()
        w0, w1, w2 = widths
        self.enc1 = DoubleConv(in_channels, w0, norm=norm)
        self.enc2 = DoubleConv(w0, w1, norm=norm)
        self.bottom = DoubleConv(w1, w2, norm=norm)
        self.dec2 = DoubleConv(w2 + w1, w1, excite=True, norm=norm)
        self.dec1 = DoubleConv(w1 + w0, w0, excite=True, norm=norm)
        self.out = nn.Conv3d(w0, 1, 1)
        self.aux = nn.ModuleList([nn.Linear(w1, 1), nn.Linear(w2, 1)])
        self.register_buffer("age_mean", torch.tensor(float(age_mean)))
        self.register_buffer("age_sd", torch.tensor(float(age_sd)))

    def _years(self, z):
        return self.age_mean + self.age_sd * z

    def forward(self, x):
        e2, b, d1 = unet_pass(self, x)
        voxel = self._years(self.out(d1)[:, 0])
        aux = [self._years(head(f.mean(dim=(2, 3, 4)))[:, 0])
               for head, f in zip(self.aux, (e2, b), strict=True)]  # fmt:skip
        return voxel, aux


def unet_pass(net: nn.Module, x):
    """The 3-scale U-Net pass shared by the local and the noise U-Nets (modules ``enc1``,
    ``enc2``, ``bottom``, ``dec2``, ``dec1``): the middle encoder, bottom and last decoder
    features.
    """
    e1 = net.enc1(x)
    e2 = net.enc2(F.avg_pool3d(e1, 2))
    b = net.bottom(F.avg_pool3d(e2, 2))
    d2 = net.dec2(torch.cat([F.interpolate(b, scale_factor=2, mode="nearest"), e2], 1))
    d1 = net.dec1(torch.cat([F.interpolate(d2, scale_factor=2, mode="nearest"), e1], 1))
    return e2, b, d1


def local_loss(voxel, aux, age, mask, aux_weight: float):
    """Seed 002 Eq. 5: voxel-level MAE (inside the brain) + weighted block-level MAEs."""
    target = age[:, None, None, None].expand_as(voxel)
    inside = mask.sum().clamp(min=1)
    loss = (torch.abs(voxel - target) * mask).sum() / inside
    for block in aux:
        loss = loss + aux_weight * torch.abs(block - age).mean()
    return loss


def aux_weight(step: int, decay_steps: int, start: float = 1.0) -> float:
    """Auxiliary-loss weight, decreasing linearly to 0 at ``decay_steps`` (seed 002: 50 000)."""
    return start * max(0.0, 1.0 - step / max(1, decay_steps))


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows along one padded axis of ``size``: every ``stride``, plus a
    last one flush with the end.
    """
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def sliding_window(volume: np.ndarray, predict: Callable[[np.ndarray], np.ndarray], window: int,
                   core: int, batch_size: int = 16) -> np.ndarray:  # fmt:skip
    """Predict a whole (C, X, Y, Z) volume from overlapping ``window``^3 blocks.

    Only the central ``core``^3 of each block is kept; the volume is zero-padded by the margin
    so that every voxel lies in the core of at least one block, and overlapping cores are
    averaged. ``predict`` maps a (N, C, w, w, w) batch to (N, w, w, w).
    """
    if core > window or (window - core) % 2:
        raise ValueError(f"core {core} must be <= window {window} with an even margin")
    margin = (window - core) // 2
    channels, *shape = volume.shape
    padded_shape = [max(s + 2 * margin, window) for s in shape]
    padded = np.zeros((channels, *padded_shape), dtype=np.float32)
    padded[(slice(None), *[slice(margin, margin + s) for s in shape])] = volume
    total = np.zeros(padded_shape, dtype=np.float64)
    count = np.zeros(padded_shape, dtype=np.float64)
    starts = [window_starts(s, window, core) for s in padded_shape]
    corners = list(itertools.product(*starts))
    for first in range(0, len(corners), batch_size):
        chunk = corners[first : first + batch_size]
        blocks = np.stack([padded[(slice(None), *[slice(c, c + window) for c in corner])]
                           for corner in chunk])  # fmt:skip
        predicted = predict(blocks)
        for corner, block in zip(chunk, predicted, strict=True):
            inner = tuple(slice(c + margin, c + margin + core) for c in corner)
            total[inner] += block[margin:margin + core, margin:margin + core,
                                  margin:margin + core]  # fmt:skip
            count[inner] += 1
    crop = tuple(slice(margin, margin + s) for s in shape)
    return (total[crop] / count[crop]).astype(np.float32)


LOCAL_DEFAULTS = {
    "widths": [4, 8, 16], "norm": True, "input_mm": 4.0, "window": 20, "core": 10, "epochs": 150,
    "batch_size": 8, "learning_rate": 1e-3, "aux_decay_fraction": 0.3, "mask_threshold": 0.1,
}  # fmt:skip


def downsample(volumes: np.ndarray, factor: int) -> np.ndarray:
    """Block-average the last three axes by ``factor`` (edges zero-padded)."""
    if factor == 1:
        return np.asarray(volumes, np.float32)
    tensor = torch.as_tensor(np.asarray(volumes, np.float32))
    lead = tensor.shape[:-3]
    flat = tensor.reshape(-1, 1, *tensor.shape[-3:])
    pad = [p for s in reversed(flat.shape[-3:]) for p in (0, (-s) % factor)]
    pooled = F.avg_pool3d(F.pad(flat, pad), factor)
    return pooled.reshape(*lead, *pooled.shape[-3:]).numpy()


class LocalAgeModel(TorchEstimator):
    """Seed 002's local brain-age U-Net on GM + WM modulated maps (fit / predict_maps / state).

    Trained on random blocks centred in the brain, every brain voxel's target being the
    participant's age; inference stitches overlapping blocks over the whole (downsampled)
    volume and brings the map back to the template grid.
    """

    kind = "local-unet"
    input = "tissue"
    role = "local"
    differentiable = False  # its global age is a mean of stitched blocks: U-noise is not drawn

    def _inputs(self, X) -> np.ndarray:
        """Downsampled to ``input_mm`` and scaled per channel by the training brain's mean and
        SD (modulated maps are small numbers; unscaled, the network settles on the mean age).
        """
        factor = max(1, round(self.params_["input_mm"] / self.params_.get("voxel_mm", 2.0)))
        self.params_["factor"] = factor
        inputs = downsample(np.asarray(X, np.float32), factor)
        if "input_mean" not in self.params_:
            brain = inputs.sum(axis=1).mean(axis=0) > self.params_["mask_threshold"]
            values = inputs[:, :, brain]
            self.params_["input_mean"] = [float(v) for v in values.mean(axis=(0, 2))]
            self.params_["input_sd"] = [float(v) or 1.0 for v in values.std(axis=(0, 2))]
        mean = np.asarray(self.params_["input_mean"], np.float32)[:, None, None, None]
        sd = np.asarray(self.params_["input_sd"], np.float32)[:, None, None, None]
        return (inputs - mean) / sd

    def fit(self, X, y):
        """``epochs`` passes of ``batch_size`` random blocks per training scan."""
        rng = self._start_fit()
        self.params_ = {**LOCAL_DEFAULTS, "voxel_mm": self.voxel_mm, **(self.settings or {})}
        inputs = self._inputs(X)  # (N, 2, x, y, z), scaled
        inside = self.brain_masks(X)  # (N, x, y, z), each scan's own brain
        y = np.asarray(y, np.float32)
        window = self.params_["window"]
        centres = np.argwhere(inside.mean(axis=0) > 0.5)
        half = [(window // 2, window // 2)] * 3
        padded = np.pad(inputs, [(0, 0), (0, 0), *half])
        padded_inside = np.pad(inside, [(0, 0), *half])
        self.network_ = LocalUNet(inputs.shape[1], self.params_["widths"], float(y.mean()),
                                 float(y.std() or 1.0), norm=self.params_["norm"])  # fmt:skip
        optimiser = torch.optim.Adam(self.network_.parameters(), lr=self.params_["learning_rate"])
        steps = self.params_.get("steps") or self.params_["epochs"] * math.ceil(
            len(y) / self.params_["batch_size"]
        )
        self.params_["steps_run"] = steps
        decay = int(self.params_["aux_decay_fraction"] * steps)
        self.history_ = []
        for step in range(steps):
            self.network_.train()
            who = rng.integers(0, len(y), self.params_["batch_size"])
            where = centres[rng.integers(0, len(centres), len(who))]
            corners = list(zip(who, where, strict=True))
            blocks = torch.as_tensor(np.stack([
                padded[i, :, cx:cx + window, cy:cy + window, cz:cz + window]
                for i, (cx, cy, cz) in corners]))  # fmt:skip
            mask = torch.as_tensor(np.stack([
                padded_inside[i, cx:cx + window, cy:cy + window, cz:cz + window]
                for i, (cx, cy, cz) in corners]), dtype=torch.float32)  # fmt:skip
            voxel, aux = self.network_(blocks)
            loss = local_loss(voxel, aux, torch.as_tensor(y[who]), mask, aux_weight(step, decay))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if step % 50 == 0:
                self.history_.append({"step": step, "loss": loss.item()})
            if (step + 1) % max(1, steps // 10) == 0:
                logging.getLogger("bids_brainage").info(
                    "local-unet step %d/%d: loss %.3f", step + 1, steps, loss.item()
                )
        self.params_["grid"] = list(np.asarray(X).shape[-3:])
        return self

    def brain_masks(self, X) -> np.ndarray:
        """Each scan's brain on the downsampled grid: GM + WM above ``mask_threshold``."""
        raw = downsample(np.asarray(X, np.float32), self.params_["factor"])
        return raw.sum(axis=1) > self.params_["mask_threshold"]

    @torch.no_grad()
    def predict_maps(self, X) -> np.ndarray:
        """(N, 2, X, Y, Z) GM/WM maps → (N, X, Y, Z) local brain age on the same grid."""
        self._start_predict()
        inputs = self._inputs(X)
        maps = []

        def predict(blocks):
            return self.network_(torch.as_tensor(blocks))[0].numpy()

        for volume in inputs:
            coarse = sliding_window(volume, predict, self.params_["window"], self.params_["core"])
            fine = F.interpolate(torch.as_tensor(coarse)[None, None],
                                 scale_factor=self.params_["factor"], mode="trilinear",
                                 align_corners=False)[0, 0].numpy()  # fmt:skip
            grid = np.asarray(X).shape[-3:]
            maps.append(fine[: grid[0], : grid[1], : grid[2]])
        return np.stack(maps)

    def predict(self, X, mask: np.ndarray | None = None) -> np.ndarray:
        """Global brain age: the mean local brain age inside the brain (seed 002 §2.4)."""
        maps = self.predict_maps(X)
        self.last_maps_ = maps  # cross-validation reads the maps behind the last prediction
        inside = np.asarray(X).sum(axis=1) > self.params_["mask_threshold"]
        if mask is not None:
            inside = inside & mask
        return np.array([m[i].mean() for m, i in zip(maps, inside, strict=True)], np.float64)

    def _build_network(self, tensors):
        return LocalUNet(2, self.params_["widths"], norm=self.params_.get("norm", False))

    def _restore_params(self, params):
        self.params_ = {**LOCAL_DEFAULTS, "voxel_mm": 2.0, **params["network"]}


class LocalErrors:
    """Out-of-fold local maps summarised as seed 002 reports them: the voxel-level MAE map, each
    participant's MAE over their brain voxels (and its median), and voxel-level r with age.
    """

    def __init__(self, X, y, mask: np.ndarray):
        self.X, self.y, self.mask = X, np.asarray(y, float), mask
        self.abs_error = np.zeros(int(mask.sum()))
        self.count = 0
        self.within = np.full(len(self.y), np.nan)
        self.sums = {k: np.zeros(int(mask.sum())) for k in ("p", "pp", "py")}

    def __call__(self, model, test) -> None:
        """Called right after ``model.predict(X[test])``, whose maps it reuses."""
        for index, full in zip(test, model.last_maps_, strict=True):
            local = full[self.mask]
            age = self.y[index]
            self.abs_error += np.abs(local - age)
            self.count += 1
            self.within[index] = float(np.mean(np.abs(local - age)))
            self.sums["p"] += local
            self.sums["pp"] += local * local
            self.sums["py"] += local * age

    def voxel_mae(self) -> np.ndarray:
        return self.abs_error / max(1, self.count)

    def voxel_r(self) -> np.ndarray:
        """Pearson r of local brain age with age at every voxel, from the running sums."""
        n, y = self.count, self.y[np.isfinite(self.within)]
        mean_p = self.sums["p"] / n
        cov = self.sums["py"] / n - mean_p * y.mean()
        var_p = self.sums["pp"] / n - mean_p**2
        with np.errstate(invalid="ignore", divide="ignore"):
            return cov / np.sqrt(var_p * y.var())

    def summary(self) -> dict:
        voxel_mae = self.voxel_mae()
        return {
            "median_within_participant_mae": float(np.nanmedian(self.within)),
            "within_participant_mae_iqr": [float(q) for q in np.nanpercentile(self.within,
                                                                              [25, 75])],
            "voxel_mae": {"median": float(np.median(voxel_mae)),
                          "p5": float(np.percentile(voxel_mae, 5)),
                          "p95": float(np.percentile(voxel_mae, 95))},
            "voxel_r_median": float(np.nanmedian(self.voxel_r())),
            "scans": int(self.count),
        }  # fmt:skip


def local_outputs(local: np.ndarray, mask: np.ndarray, labels: np.ndarray, names: list[str],
                  age: float | None):  # fmt:skip
    """Masked local brain-age map, its PAD map (None without an age) and the ROI table, whose
    first row is the whole-brain average (the global local brain age).
    """
    from ..utils.atlas import roi_means

    local = np.where(mask, local, 0).astype(np.float32)
    known = age is not None and np.isfinite(age)
    pad = np.where(mask, local - age, 0).astype(np.float32) if known else None
    table = roi_means(local, np.where(mask, labels, 0), names)
    whole = {"roi": "Whole brain", "n_voxels": int(mask.sum()), "mean": float(local[mask].mean())}
    table = pd.concat([pd.DataFrame([whole]), table], ignore_index=True)
    table = table.rename(columns={"mean": "mean_local_brainage"})
    table["mean_local_pad"] = table["mean_local_brainage"] - age if known else np.nan
    return local, pad, table
