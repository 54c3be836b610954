"""Occlusion maps find the region a planted model depends on."""

from __future__ import annotations

import numpy as np

from bids_brainage.models.importance import occlusion_map, patch_corners


def test_patches_cover_the_mask():
    mask = np.zeros((20, 20, 20), bool)
    mask[3:17, 5:15, 2:19] = True
    covered = np.zeros_like(mask)
    for x, y, z in patch_corners(mask, 4, 4):
        covered[x : x + 4, y : y + 4, z : z + 4] = True
    assert covered[mask].all()


def test_occlusion_finds_the_planted_region():
    rng = np.random.default_rng(0)
    shape = (24, 24, 24)
    mask = np.zeros(shape, bool)
    mask[2:22, 2:22, 2:22] = True
    region = (slice(4, 10), slice(12, 18), slice(6, 12))
    volume = (rng.uniform(0.4, 0.6, (2, *shape)) * mask).astype(np.float32)

    def planted(batch):  # age = 80 - 50 x mean GM in the region; nothing else matters
        return 80 - 50 * batch[:, 0][(slice(None), *region)].mean(axis=(1, 2, 3))

    importance, baseline = occlusion_map(volume, planted, mask, patch=4, stride=2, batch_size=7)
    assert baseline == planted(volume[None])[0]
    inside = np.zeros(shape, bool)
    inside[region] = True
    assert importance[inside].mean() > 2  # hiding the region's GM makes the brain look older
    far = mask.copy()
    far[0:14, 8:22, 2:16] = False  # everything within a patch of the region
    assert np.abs(importance[far]).max() == 0
    assert (importance[~mask] == 0).all()
