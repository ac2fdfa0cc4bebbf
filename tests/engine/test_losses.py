"""Losses (Gram, masked Gram, content, style, TV, mean/std) and the style-target cache."""

from __future__ import annotations

import torch

from shared.engine.losses import (
    content_loss,
    gram_matrix,
    masked_mean_std,
    mean_std,
    resize_mask,
    style_loss,
    total_variation,
)
from shared.engine.style_cache import StyleCache, get_or_compute, sha256_bytes, style_cache


def _feat(seed: int = 0, shape=(1, 4, 8, 8)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_gram_is_normalized_by_c_h_w() -> None:
    # given a feature map of ones
    feat = torch.ones(1, 3, 4, 5)
    # when its Gram matrix is taken
    g = gram_matrix(feat)
    # expect every entry = H*W / (C*H*W) = 1/C
    assert g.shape == (1, 3, 3)
    assert torch.allclose(g, torch.full((1, 3, 3), 1 / 3))


def test_masked_gram_with_full_mask_equals_unmasked() -> None:
    feat = _feat()
    assert torch.allclose(gram_matrix(feat, torch.ones(1, 1, 8, 8)), gram_matrix(feat), atol=1e-6)


def test_masked_gram_is_normalized_by_mask_area() -> None:
    # given features and a mask of the left half, at the feature resolution
    feat = _feat(1)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1
    # when the masked Gram is taken
    g = gram_matrix(feat, mask)
    # expect the Gram of the left half alone (normalized by its own area, not H*W)
    assert torch.allclose(g, gram_matrix(feat[..., :4]), atol=1e-6)


def test_masked_gram_resizes_the_mask_to_the_layer() -> None:
    # given a mask at 4x the feature resolution
    feat = _feat(2)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :16] = 1
    # expect the same Gram as the mask at the layer's resolution
    assert torch.allclose(gram_matrix(feat, mask), gram_matrix(feat[..., :4]), atol=1e-6)
    assert resize_mask(mask, (8, 8)).shape == (1, 1, 8, 8)


def test_content_and_style_losses_vanish_on_their_own_targets() -> None:
    feats = {"a": _feat(3), "b": _feat(4, (1, 6, 4, 4))}
    targets = {k: gram_matrix(v) for k, v in feats.items()}
    assert content_loss(feats["a"], feats["a"]).item() == 0.0
    assert style_loss(feats, targets).item() == 0.0
    other = {k: gram_matrix(v * 2) for k, v in feats.items()}
    assert style_loss(feats, other).item() > 0.0


def test_style_loss_accepts_per_layer_masks() -> None:
    feats = {"a": _feat(5)}
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:] = 1
    targets = {"a": gram_matrix(feats["a"][..., 4:])}
    assert style_loss(feats, targets, mask).item() < 1e-10
    assert style_loss(feats, targets, {"a": mask}).item() < 1e-10


def test_total_variation_is_zero_only_for_flat_images() -> None:
    assert total_variation(torch.full((1, 3, 6, 6), 0.5)).item() == 0.0
    assert total_variation(_feat(6, (1, 3, 6, 6))).item() > 0.0


def test_mean_std_matches_population_statistics() -> None:
    feat = _feat(7, (2, 3, 5, 5))
    mean, std = mean_std(feat, eps=0.0)
    assert mean.shape == std.shape == (2, 3, 1, 1)
    assert torch.allclose(mean.flatten(), feat.mean(dim=(2, 3)).flatten(), atol=1e-6)
    assert torch.allclose(std.flatten(), feat.std(dim=(2, 3), unbiased=False).flatten(), atol=1e-5)


def test_masked_mean_std_is_the_statistics_of_the_region() -> None:
    feat = _feat(8)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 8:, :] = 1  # bottom half, at twice the feature resolution
    mean, std = masked_mean_std(feat, mask)
    ref_mean, ref_std = mean_std(feat[..., 4:, :])
    assert torch.allclose(mean, ref_mean, atol=1e-5)
    assert torch.allclose(std, ref_std, atol=1e-5)
    full_mean, full_std = masked_mean_std(feat, torch.ones(1, 1, 8, 8))
    assert torch.allclose(full_mean, mean_std(feat)[0], atol=1e-5)
    assert torch.allclose(full_std, mean_std(feat)[1], atol=1e-5)


def test_style_cache_computes_once_per_key() -> None:
    # given a fresh cache and a counting target function
    cache = StyleCache(max_entries=4)
    calls = []

    def compute() -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"relu1_1": torch.ones(1, 2, 2)}

    key = ("gram", sha256_bytes(b"style"), (64, 64), ("relu1_1",), torch.float32, torch.device("cpu"), None)
    # when the same key is asked twice, and a different one once
    first = cache.get_or_compute(key, compute)
    second = cache.get_or_compute(list(key), compute)
    cache.get_or_compute(("gram", sha256_bytes(b"other")), compute)
    # expect one computation per distinct key, the same object back, and the hit counted
    assert len(calls) == 2
    assert second is first
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (1, 2, 2)
    assert stats.bytes == 2 * 4 * 4


def test_style_cache_is_bounded_by_entries_and_bytes() -> None:
    cache = StyleCache(max_entries=2, max_bytes=100)
    for i in range(3):
        cache.get_or_compute(("k", i), lambda: torch.zeros(4))  # 16 bytes each
    assert cache.stats().entries == 2 and cache.stats().evictions == 1
    cache.get_or_compute(("big",), lambda: torch.zeros(20))  # 80 bytes: evicts down to <= 100
    assert cache.stats().bytes <= 100
    cache.get_or_compute(("huge",), lambda: torch.zeros(1000))  # larger than the cache: not kept
    assert ("huge",) not in [k for k in cache._items]


def test_process_cache_is_shared() -> None:
    key = ("test_process_cache_is_shared", 1)
    a = get_or_compute(key, lambda: torch.ones(1))
    assert get_or_compute(key, lambda: torch.zeros(1)) is a
    assert style_cache().stats().hits >= 1
