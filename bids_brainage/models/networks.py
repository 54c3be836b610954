"""The seeds' convolutional regressors, in torch.

Widths are scaled down from the papers (which trained on GPUs with thousands of scans) so that
a model trains on two CPU cores within the hour; the layouts are the papers'.

Normalisation: seed 001 uses instance normalisation because it trains with batches of one. It
removes each scan's own feature scale at every layer, and with it the global amount of tissue
that tells age: on 8 synthetic scans an instance-normalised slice CNN could not even fit its
training set (MAE stuck at 11.3 years after 120 steps) where batch normalisation reached 1.5.
We train with batches of 8, so batch normalisation is the default (``norm="batch"``);
``norm="instance"`` keeps the seed's choice.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

RESNET18_BLOCKS = (2, 2, 2, 2)


def _conv(dim, cin, cout, kernel=3, stride=1):
    cls = nn.Conv3d if dim == 3 else nn.Conv2d
    return cls(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)


def _norm(dim, channels, norm="batch"):
    if norm == "instance":
        cls = nn.InstanceNorm3d if dim == 3 else nn.InstanceNorm2d
        return cls(channels, affine=True)
    return (nn.BatchNorm3d if dim == 3 else nn.BatchNorm2d)(channels)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convolutions, each followed by normalisation."""

    def __init__(self, dim, cin, cout, stride, norm="batch"):
        super().__init__()
        self.conv1, self.norm1 = _conv(dim, cin, cout, stride=stride), _norm(dim, cout, norm)
        self.conv2, self.norm2 = _conv(dim, cout, cout), _norm(dim, cout, norm)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(_conv(dim, cin, cout, 1, stride), _norm(dim, cout, norm))

    def forward(self, x):
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


def pool_to_grid(features: torch.Tensor, cells: int = 2) -> torch.Tensor:
    """Average over a ``cells``-per-axis grid, then flatten.

    Global average pooling after instance normalisation and ReLU gives nearly the same numbers
    for every input (each channel was just normalised), so networks trained that way predict the
    mean age; a coarse grid keeps where in the brain a feature is.
    """
    if features.ndim == 5:
        pooled = F.adaptive_avg_pool3d(features, cells)
    else:
        pooled = F.adaptive_avg_pool2d(features, cells)
    return pooled.flatten(1)


class ResNet18(nn.Module):
    """ResNet-18 feature extractor (no fully connected layer), 2-D or 3-D, pooled to a coarse
    grid (see ``pool_to_grid``).
    """

    def __init__(self, dim: int, in_channels: int = 1, widths=(16, 32, 64, 128), cells: int = 2,
                 norm: str = "batch"):  # fmt:skip
        super().__init__()
        self.stem = nn.Sequential(
            _conv(dim, in_channels, widths[0], 3, 2), _norm(dim, widths[0], norm), nn.ReLU()
        )
        layers, cin = [], widths[0]
        for index, (width, blocks) in enumerate(zip(widths, RESNET18_BLOCKS, strict=True)):
            for block in range(blocks):
                stride = 2 if index > 0 and block == 0 else 1
                layers.append(BasicBlock(dim, cin, width, stride, norm))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.cells = cells
        self.out_features = cin * cells**dim

    def forward(self, x):
        return pool_to_grid(self.layers(self.stem(x)), self.cells)


class AgeHead(nn.Module):
    """Linear regressor whose output is in years: mean + sd · z (targets standardised)."""

    def __init__(self, features: int, age_mean: float = 0.0, age_sd: float = 1.0):
        super().__init__()
        self.linear = nn.Linear(features, 1)
        self.register_buffer("age_mean", torch.tensor(float(age_mean)))
        self.register_buffer("age_sd", torch.tensor(float(age_sd)))

    def forward(self, x):
        return self.age_mean + self.age_sd * self.linear(x).squeeze(-1)


class ResNet3dRegressor(nn.Module):
    """3-D ResNet-18 → average pooling (to a 2×2×2 grid) → linear (seeds 001, 003)."""

    def __init__(self, widths=(16, 32, 64, 128), norm="batch"):
        super().__init__()
        self.backbone = ResNet18(3, 1, widths, norm=norm)
        self.head = AgeHead(self.backbone.out_features)

    def forward(self, x):  # (batch, 1, X, Y, Z)
        return self.head(self.backbone(x))


class ResNet2dLSTM(nn.Module):
    """Seed 001: 2-D ResNet-18 per axial slice → average pooling of ``pool`` adjacent slices →
    bidirectional LSTM (hidden 64) → all outputs concatenated → linear.
    """

    def __init__(self, n_slices: int, widths=(16, 32, 64, 128), pool: int = 3, hidden: int = 64,
                 norm: str = "batch"):  # fmt:skip
        super().__init__()
        self.backbone = ResNet18(2, 1, widths, norm=norm)
        self.pool = pool
        self.lstm = nn.LSTM(self.backbone.out_features, hidden, batch_first=True,
                            bidirectional=True)  # fmt:skip
        self.steps = n_slices // pool
        self.head = AgeHead(self.steps * 2 * hidden)

    def forward(self, x):  # (batch, slices, H, W)
        batch, slices = x.shape[:2]
        features = self.backbone(x.reshape(batch * slices, 1, *x.shape[2:]))
        features = features.reshape(batch, slices, -1).transpose(1, 2)
        pooled = F.avg_pool1d(features, self.pool, self.pool).transpose(1, 2)
        out, _ = self.lstm(pooled)
        return self.head(out.reshape(batch, -1))


class SliceCNN(nn.Module):
    """Seed 000's CNN: 10 convolutional layers on a slab of axial slices at the ventricles
    (the slices are the input channels), average pooling to a 2×2 grid, dropout, linear.
    """

    def __init__(self, n_slices: int, widths=(16, 32, 64, 96, 128), norm: str = "batch"):
        super().__init__()
        layers, cin = [], n_slices
        for index, width in enumerate(widths):
            if index:
                layers.append(nn.MaxPool2d(2))
            for _ in range(2):
                layers += [_conv(2, cin, width), _norm(2, width, norm), nn.ReLU()]
                cin = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.head = AgeHead(cin * 4)

    def forward(self, x):  # (batch, slices, H, W)
        return self.head(self.dropout(pool_to_grid(self.features(x), 2)))


def build_network(kind: str, params: dict) -> nn.Module:
    """The network of a bundle kind from its JSON parameters."""
    widths, norm = tuple(params["widths"]), params.get("norm", "batch")
    if kind == "resnet3d":
        return ResNet3dRegressor(widths, norm)
    if kind == "resnet2d-lstm":
        return ResNet2dLSTM(params["n_slices"], widths, params["pool"], params["hidden"], norm)
    if kind == "slice-cnn":
        return SliceCNN(params["n_slices"], widths, norm)
    raise ValueError(f"{kind!r} is not a network kind")


def network_tensors(network: nn.Module) -> dict[str, torch.Tensor]:
    """A network's weights as detached, contiguous copies (what safetensors stores)."""
    return {k: v.detach().clone().contiguous() for k, v in network.state_dict().items()}


def restored(network: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """``network`` with the stored weights loaded, in evaluation mode."""
    network.load_state_dict(tensors)
    return network.eval()
