import math

import numpy as np
import pytest
import torch

from freres_lmms.core import (
    METHODS,
    CompressionError,
    FullMethod,
    UniformMethod,
    VideoTokens,
    budget_tokens,
    build_method,
    gather_tokens,
    region_position,
)


def make_video(t=8, h=4, w=6, d=5, deepstack=2):
    features = torch.randn(t, h, w, d)
    tt, hh, ww = torch.meshgrid(torch.arange(t) * 3 + 10, torch.arange(h) + 10, torch.arange(w) + 10, indexing="ij")
    positions = torch.stack([tt, hh, ww])
    return VideoTokens(features, positions, [torch.randn(t, h, w, d) for _ in range(deepstack)])


def test_budget_semantics():
    assert budget_tokens(None, 100) == 100
    assert budget_tokens(0.25, 100) == 25
    assert budget_tokens(1.0, 100) == 100
    assert budget_tokens(1, 100) == 1
    assert budget_tokens(500, 100) == 100  # above full keeps everything
    for bad in (0, -3, 0.0, 1.5, "x", True):
        with pytest.raises(CompressionError):
            budget_tokens(bad, 100)


def test_full_is_identity():
    video = make_video()
    out = FullMethod()(video)
    assert out.num_tokens == video.num_tokens
    assert torch.equal(out.features, video.features.reshape(-1, 5))
    assert torch.equal(out.positions, video.positions.reshape(3, -1))
    assert all(torch.equal(a, b.reshape(-1, 5)) for a, b in zip(out.deepstack, video.deepstack))


@pytest.mark.parametrize("stride,slices", [(1, [0, 1, 2, 3, 4, 5, 6, 7]), (2, [0, 2, 4, 6]), (3, [0, 3, 6]), (8, [0])])
def test_uniform_stride_keeps_whole_slices(stride, slices):
    video = make_video()
    out = UniformMethod(stride=stride)(video)
    assert out.num_tokens == len(slices) * 24
    kept_t = sorted(set((out.positions[0] - 10).div(3).tolist()))
    assert kept_t == slices
    # kept tokens keep their original features, positions and deepstack rows
    expected = video.features[slices].reshape(-1, 5)
    assert torch.equal(out.features, expected)
    assert torch.equal(out.deepstack[1], video.deepstack[1][slices].reshape(-1, 5))
    assert torch.equal(out.positions, video.positions[:, slices].reshape(3, -1))


@pytest.mark.parametrize("budget,count", [(48, 2), (0.5, 4), (95, 3), (24, 1), (10_000, 8), (1.0, 8)])
def test_uniform_budget_exact_counts(budget, count):
    out = UniformMethod(budget=budget)(make_video())
    assert out.num_tokens == count * 24
    t = (out.positions[0] - 10).div(3).unique()
    assert t[0] == 0 and (count == 1 or t[-1] == 7)  # evenly spaced, ends included


def test_uniform_errors():
    with pytest.raises(CompressionError, match="below one temporal slice"):
        UniformMethod(budget=23)(make_video())
    with pytest.raises(CompressionError, match="not both"):
        UniformMethod(stride=2, budget=10)
    with pytest.raises(CompressionError, match="positive int"):
        UniformMethod(stride=0)


def test_one_slice_video():
    out = UniformMethod(stride=2)(make_video(t=1))
    assert out.num_tokens == 24


def test_gather_sorts_and_dedups():
    video = make_video()
    out = gather_tokens(video, torch.tensor([5, 3, 3, 100]))
    assert out.kept.tolist() == [3, 5, 100]
    assert torch.equal(out.slots, out.kept)
    with pytest.raises(CompressionError, match="out of range"):
        gather_tokens(video, torch.tensor([video.num_tokens]))


def test_video_tokens_validate_shapes():
    with pytest.raises(CompressionError, match="positions"):
        VideoTokens(torch.zeros(2, 2, 2, 3), torch.zeros(3, 2, 2, 1, dtype=torch.long))
    with pytest.raises(CompressionError, match="deepstack"):
        VideoTokens(torch.zeros(2, 2, 2, 3), torch.zeros(3, 2, 2, 2, dtype=torch.long), [torch.zeros(1, 2, 2, 3)])


def test_region_position_is_floor_of_mean():
    video = make_video(t=4, h=2, w=2)
    flat = video.positions.reshape(3, -1)
    regions = torch.zeros(2, flat.shape[1], dtype=torch.bool)
    regions[0, :8] = True  # slices 0-1, whole grid
    regions[1, [0, 15]] = True
    got = region_position(flat, regions)
    expected = np.floor(np.stack([flat[:, r].double().mean(1).numpy() for r in regions], 1))
    assert got.tolist() == expected.astype(int).tolist()
    assert got[:, 0].tolist() == [math.floor((10 + 13) / 2), 10, 10]


def test_registry_unknown_method_lists_known():
    with pytest.raises(KeyError) as err:
        build_method("nope")
    for name in METHODS:
        assert name in str(err.value)
    with pytest.raises(CompressionError, match="unexpected options"):
        build_method("full", budget=0.5)
