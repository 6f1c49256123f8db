"""Fourier-VLM (``core/fourier.py``): counts, the DCT against scipy, identity, positions, magnitude, budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch
from test_adapters import assert_inputs_and_logits_equal_full, prepare

from freres_lmms.core import CompressionError, VideoTokens, region_position
from freres_lmms.core.fourier import (
    FourierMethod,
    lowpass_operator,
    official_grid,
    regrid,
)
from freres_lmms.models import ADAPTERS


def grid_video(t=3, h=6, w=5, d=8, seed=0, deepstack=0) -> VideoTokens:
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(t, h, w, d, generator=g)
    ti, hi, wi = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    positions = torch.stack([3 * ti + 5, hi + 5, 2 * wi + 5])  # any monotone layout, offset like a prompt
    extra = [torch.randn(t, h, w, d, generator=g) for _ in range(deepstack)]
    return VideoTokens(features, positions, extra)


def scipy_reference(x: torch.Tensor, hk: int, wk: int) -> np.ndarray:
    """Official recipe with scipy: ortho 2-D DCT-II over (H, W), low block, ortho inverse of size h' x w'."""
    coeff = scipy.fft.dctn(x.double().numpy(), type=2, norm="ortho", axes=(1, 2))
    return scipy.fft.idctn(coeff[:, :hk, :wk], type=2, norm="ortho", axes=(1, 2))


@pytest.mark.parametrize("h, w, rho, coarse", [
    (24, 24, 2 / 3, (16, 16)),  # the official default on Qwen's 24x24 grid: 256 of 576
    (6, 6, 2 / 3, (4, 4)),
    (8, 6, 2 / 3, (5, 4)),  # non-square
    (5, 7, 0.5, (2, 3)),
    (3, 4, 0.1, (1, 1)),  # rho too small for one row: max(floor(H rho), 1)
    (1, 5, 0.5, (1, 2)),
    (4, 4, 1.0, (4, 4)),
])
def test_counts_follow_the_official_floor_rule(h, w, rho, coarse):
    video = grid_video(t=3, h=h, w=w, d=4)
    method = FourierMethod(rho=rho)
    out = method(video)
    assert official_grid(h, w, rho) == coarse
    assert out.num_tokens == method.last_counts["total"] == 3 * coarse[0] * coarse[1]
    assert method.last_counts["coarse"] == (3, *coarse)
    assert out.features.shape == (out.num_tokens, 4) and out.positions.shape == (3, out.num_tokens)
    assert out.slots.shape == (out.num_tokens,) and out.kept is None


@pytest.mark.parametrize("h, w, rho", [(6, 5, 2 / 3), (8, 8, 0.5), (7, 3, 0.4), (5, 9, 0.9)])
def test_dct_lowpass_matches_scipy(h, w, rho):
    video = grid_video(t=4, h=h, w=w, d=6, seed=h * w, deepstack=1)
    hk, wk = official_grid(h, w, rho)
    out = FourierMethod(rho=rho)(video)
    got = out.features.reshape(4, hk, wk, 6).double().numpy()
    np.testing.assert_allclose(got, scipy_reference(video.features, hk, wk), rtol=0, atol=2e-5)
    # DeepStack layers get the identical crop
    ds = out.deepstack[0].reshape(4, hk, wk, 6).double().numpy()
    np.testing.assert_allclose(ds, scipy_reference(video.deepstack[0], hk, wk), rtol=0, atol=2e-5)


def test_bf16_in_bf16_out_computed_in_fp32():
    video = grid_video(t=2, h=6, w=6, d=8)
    low = VideoTokens(video.features.bfloat16(), video.positions)
    out = FourierMethod()(low)
    assert out.features.dtype == torch.bfloat16
    ref = torch.from_numpy(scipy_reference(low.features.float(), 4, 4)).reshape(-1, 8).to(torch.bfloat16)
    torch.testing.assert_close(out.features, ref)  # fp32 math, one final rounding to bf16


def test_rho_one_is_the_identity():
    video = grid_video(t=2, h=4, w=3, deepstack=1)
    out = FourierMethod(rho=1.0)(video)
    assert torch.equal(out.features, video.features.reshape(-1, 8))
    assert torch.equal(out.deepstack[0], video.deepstack[0].reshape(-1, 8))
    assert torch.equal(out.positions, video.positions.reshape(3, -1))
    assert torch.equal(out.slots, torch.arange(video.num_tokens))
    # the transform itself at full size is the identity up to fp32 rounding (the method skips it)
    rows, cols = lowpass_operator(4, 4, torch.device("cpu")), lowpass_operator(3, 3, torch.device("cpu"))
    torch.testing.assert_close(regrid(video.features, rows, cols), video.features, rtol=0, atol=1e-5)


def test_positions_and_slots_hand_built():
    """T=2, 5x4 grid, rho 0.65 -> 3x2 cells: rows {0,1},{2,3},{4}; cols {0,1},{2,3}."""
    video = grid_video(t=2, h=5, w=4, d=3)  # positions (3t+5, h+5, 2w+5)
    method = FourierMethod(rho=0.65)
    out = method(video)
    assert method.last_counts["coarse"] == (2, 3, 2)
    t_ids = [5] * 6 + [8] * 6
    h_ids = [5, 5, 7, 7, 9, 9] * 2  # floor(mean(5, 6)), floor(mean(7, 8)), 9
    w_ids = [6, 10] * 6  # floor(mean(5, 7)), floor(mean(9, 11))
    assert out.positions.tolist() == [t_ids, h_ids, w_ids]
    # slots: grid token at the floor of the mean grid coordinates: rows 0, 2, 4; cols 0, 2
    assert out.slots.tolist() == [0, 2, 8, 10, 16, 18, 20, 22, 28, 30, 36, 38]
    # and core.base's region_position on explicit region masks agrees
    t, h, w = video.grid
    ti, hi, wi = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    cell = (ti * 3 + hi * 3 // h) * 2 + wi * 2 // w
    masks = (cell.reshape(1, -1) == torch.arange(12)[:, None])
    assert torch.equal(out.positions, region_position(video.positions.reshape(3, -1), masks))


def test_positions_on_uneven_grid_against_region_position():
    g = torch.Generator().manual_seed(1)
    video = grid_video(t=3, h=7, w=9, d=2)
    video.positions = video.positions + torch.randint(0, 5, video.positions.shape, generator=g)  # floors matter
    out = FourierMethod(rho=0.45)(video)  # 3 x 4 cells of sizes 3/2/2 and 3/2/2/2
    hk, wk = official_grid(7, 9, 0.45)
    ti, hi, wi = torch.meshgrid(torch.arange(3), torch.arange(7), torch.arange(9), indexing="ij")
    cell = (ti * hk + hi * hk // 7) * wk + wi * wk // 9
    masks = (cell.reshape(1, -1) == torch.arange(3 * hk * wk)[:, None])
    assert torch.equal(out.positions, region_position(video.positions.reshape(3, -1), masks))
    assert torch.equal(out.slots, out.slots.sort().values)  # raster order of the coarse grid
    assert torch.equal(out.slots // (7 * 9), torch.arange(3).repeat_interleave(hk * wk))  # t unchanged


@pytest.mark.parametrize("rescale", [False, True])
def test_constant_grid_stays_constant(rescale):
    t, h, w, d = 2, 6, 5, 3
    values = torch.tensor([3.0, -1.5, 0.25])
    video = VideoTokens(values.expand(t, h, w, d).clone(), grid_video(t, h, w, d).positions)
    method = FourierMethod(rho=2 / 3, rescale=rescale)
    out = method(video)
    hk, wk = official_grid(h, w, 2 / 3)
    inflation = math.sqrt(h * w / (hk * wk))  # the official DC magnitude inflation
    expected = values if rescale else values * inflation
    torch.testing.assert_close(out.features, expected.expand(t * hk * wk, d), rtol=1e-6, atol=1e-6)
    assert method.last_counts["scale"] == pytest.approx(1 / inflation if rescale else 1.0)


def reachable_grids(h: int, w: int) -> set:
    """Every grid the official floor rule reaches, by brute force over a fine rho grid."""
    return {official_grid(h, w, rho) for rho in np.linspace(1e-4, 1.0, 20001)} | {(h, w)}


@pytest.mark.parametrize("h, w", [(6, 6), (8, 6), (5, 9)])
def test_budget_takes_the_largest_reachable_grid_not_above(h, w):
    t = 4
    video = grid_video(t=t, h=h, w=w, d=2)
    grids = reachable_grids(h, w)
    for target in range(t, t * h * w + 1):
        method = FourierMethod(budget=target)
        out = method(video)
        best = max((a * b, (a, b)) for a, b in grids if t * a * b <= target)
        assert method.last_counts["coarse"] == (t, *best[1]) and out.num_tokens == t * best[0] <= target
        assert method.last_counts["target"] == target


def test_budget_exact_nearest_below_ratio_and_above_full():
    video = grid_video(t=4, h=8, w=6, d=2)
    assert FourierMethod(budget=4 * 20)(video).num_tokens == 80  # (5, 4): exact
    assert FourierMethod(budget=4 * 20 - 1)(video).num_tokens == 4 * 15  # (5, 3): nearest below
    assert FourierMethod(budget=0.25)(video).num_tokens == 4 * 12  # 48 of 192 -> (4, 3)
    # the official rho reproduced by the equivalent budget
    same = FourierMethod(budget=4 * 5 * 4)(video)
    assert torch.equal(same.features, FourierMethod(rho=2 / 3)(video).features)
    full = FourierMethod(budget=10_000)(video)
    assert torch.equal(full.features, video.features.reshape(-1, 2))
    assert torch.equal(FourierMethod(budget=1.0)(video).features, full.features)


def test_one_frame_and_one_token_grids():
    one = grid_video(t=1, h=1, w=1, d=3)
    out = FourierMethod()(one)
    assert torch.equal(out.features, one.features.reshape(1, 3)) and out.slots.tolist() == [0]
    assert FourierMethod(budget=1)(grid_video(t=1, h=4, w=4)).num_tokens == 1


@pytest.mark.parametrize("knobs, message", [
    ({"rho": 0.0}, "rho"), ({"rho": 1.5}, "rho"), ({"rho": "2/3"}, "rho"), ({"rho": True}, "rho"),
    ({"rescale": "yes"}, "rescale"), ({"budget": 0}, "at least 1"), ({"budget": -5}, "at least 1"),
    ({"budget": 1.5}, "ratio"), ({"budget": "64"}, "budget"),
])
def test_bad_knobs(knobs, message):
    with pytest.raises(CompressionError, match=message):
        FourierMethod(**knobs)


def test_budget_below_one_token_per_slice_is_an_error():
    with pytest.raises(CompressionError, match="below one token per temporal slice"):
        FourierMethod(budget=3)(grid_video(t=4))


@pytest.mark.parametrize("family", ["qwen2_5vl", "qwen3vl"])
def test_adapter_rho_one_equals_full_and_rho_below_regrids(family, loaded, videos):
    model, processor = loaded[family]
    adapter = ADAPTERS[family](model, processor)
    inputs = prepare(processor, [videos[3]["video"]])
    assert_inputs_and_logits_equal_full(model, adapter, inputs, FourierMethod(rho=1.0))
    # rho below one: T h' w' tokens enter with the method's positions, and generation runs
    t, h, w = (int(v) for v in inputs["video_grid_thw"][0])
    h, w = h // adapter.merge, w // adapter.merge
    method = FourierMethod()
    kwargs, stats = adapter.compress_inputs(inputs, method)
    hk, wk = official_grid(h, w, 2 / 3)
    is_video = kwargs["input_ids"][0] == model.config.video_token_id
    assert stats[0].visual_tokens_after == t * hk * wk == int(is_video.sum())
    video_pos = kwargs["position_ids"][1:, 0, is_video]
    assert torch.equal(video_pos[1].view(t, hk, wk)[:, :, 0], video_pos[1].view(t, hk, wk)[:, :, -1])  # rows of a grid
    out = adapter.generate(kwargs, {"max_new_tokens": 3, "do_sample": False}, method)
    assert out.shape[1] > kwargs["input_ids"].shape[1]
