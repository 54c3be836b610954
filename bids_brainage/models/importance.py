"""Voxel importance of a global brain-age model: occlusion (seed 000).

A patch of the input is set to zero (no tissue / background) and the change of the predicted
age recorded; patches slide over the brain with a stride, occluded copies are predicted in
batches, and every voxel gets the mean change over the patches that covered it. The map is in
years: positive where hiding the tissue makes the brain look older.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np


def patch_corners(mask: np.ndarray, patch: int, stride: int) -> list[tuple[int, int, int]]:
    """Corners of ``patch``^3 cubes every ``stride`` voxels over the bounding box of ``mask``,
    keeping the cubes that touch the mask.
    """
    inside = np.argwhere(mask)
    low, high = inside.min(axis=0), inside.max(axis=0) + 1
    axes = []
    for lo, hi, size in zip(low, high, mask.shape, strict=True):
        starts = list(range(int(lo), max(int(lo) + 1, int(hi) - patch + 1), stride))
        if starts[-1] + patch < hi:
            starts.append(min(int(hi) - patch, size - patch))
        axes.append(starts)
    return [c for c in itertools.product(*axes)
            if mask[c[0]:c[0] + patch, c[1]:c[1] + patch, c[2]:c[2] + patch].any()]  # fmt:skip


def occlusion_map(volume: np.ndarray, predict: Callable[[np.ndarray], np.ndarray],
                  mask: np.ndarray, patch: int = 8, stride: int = 8,
                  batch_size: int = 16) -> tuple[np.ndarray, float]:  # fmt:skip
    """(C, X, Y, Z) input → (X, Y, Z) mean change of the prediction (years) when occluded, and
    the unoccluded prediction. ``predict`` maps (N, C, X, Y, Z) to (N,).
    """
    baseline = float(predict(volume[None])[0])
    total = np.zeros(mask.shape)
    count = np.zeros(mask.shape)
    corners = patch_corners(mask, patch, stride)
    for first in range(0, len(corners), batch_size):
        chunk = corners[first : first + batch_size]
        batch = np.repeat(volume[None], len(chunk), axis=0)
        for i, (x, y, z) in enumerate(chunk):
            batch[i, :, x : x + patch, y : y + patch, z : z + patch] = 0
        changes = np.asarray(predict(batch), float) - baseline
        for (x, y, z), change in zip(chunk, changes, strict=True):
            total[x : x + patch, y : y + patch, z : z + patch] += change
            count[x : x + patch, y : y + patch, z : z + patch] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        importance = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    return np.where(mask, importance, 0.0).astype(np.float32), baseline
