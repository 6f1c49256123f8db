"""CDPruner (``core/cdpruner.py``): greedy MAP against a naive log-det reference, counts, the relevance
sign and normalisation, the rank-deficient stop, and the adapter path."""

from __future__ import annotations

import pytest
import torch
from test_adapters import assert_inputs_and_logits_equal_full, prepare

from freres_lmms.core import CompressionError, FullMethod, VideoTokens
from freres_lmms.core.cdpruner import (
    CDPrunerMethod,
    conditional_kernel,
    frame_counts,
    greedy_map,
    relevance,
)
from freres_lmms.models import ADAPTERS


def grid_video(t=4, h=6, w=6, d=32, seed=0, query=3, deepstack=0) -> VideoTokens:
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(t, h, w, d, generator=g)
    ti, hi, wi = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    positions = torch.stack([2 * ti + 9, hi + 9, wi + 9])
    q = torch.randn(query, d, generator=g) if query else None
    return VideoTokens(features, positions, [torch.randn(t, h, w, d, generator=g) for _ in range(deepstack)], q)


def naive_greedy(kernel: torch.Tensor, k: int) -> list[int]:
    """Greedy MAP by definition: each step adds the token maximising log det of the kernel's submatrix."""
    kernel = kernel.double()
    chosen: list[int] = []
    for _ in range(k):
        scores = torch.full((kernel.shape[0],), float("-inf"), dtype=torch.float64)
        for j in range(kernel.shape[0]):
            if j not in chosen:
                idx = torch.tensor(chosen + [j])
                scores[j] = torch.logdet(kernel[idx][:, idx])
        chosen.append(int(scores.argmax()))
    return chosen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_map_matches_naive_logdet_reference(seed):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(3, 12, 16, generator=g)  # full rank: 12 tokens in 16 dims
    rel = torch.rand(3, 12, generator=g) * 0.9 + 0.1
    kernel = conditional_kernel(features, rel)
    picks, dpp_steps = greedy_map(kernel, 8, rel)
    for frame in range(3):
        assert picks[frame].tolist() == naive_greedy(kernel[frame], 8)
    assert dpp_steps.tolist() == [8, 8, 8]


def test_select_is_the_greedy_map_of_the_conditional_kernel():
    video = grid_video(t=3, h=3, w=4, d=16, seed=5)
    method = CDPrunerMethod(tokens_per_frame=5)
    keep = method.select(video)
    features = video.features.reshape(3, 12, 16)
    kernel = conditional_kernel(features, relevance(features, video.query, "clip"))
    expected = sorted(f * 12 + j for f in range(3) for j in naive_greedy(kernel[f], 5))
    assert keep.tolist() == expected  # sorted into raster order
    out = method(video)
    assert torch.equal(out.kept, keep) and torch.equal(out.slots, keep)
    assert torch.equal(out.positions, video.positions.reshape(3, -1)[:, keep])


def test_no_query_is_a_plain_dpp():
    video = grid_video(t=2, h=3, w=3, d=16, query=0)
    method = CDPrunerMethod(tokens_per_frame=4)
    keep = method.select(video)
    features = video.features.reshape(2, 9, 16)
    kernel = conditional_kernel(features, torch.ones(2, 9))
    expected = sorted(f * 9 + j for f in range(2) for j in naive_greedy(kernel[f], 4))
    assert keep.tolist() == expected
    assert method.last_counts["relevance"].startswith("none")
    empty = VideoTokens(video.features, video.positions, query=torch.zeros(0, 16))
    assert torch.equal(CDPrunerMethod(tokens_per_frame=4).select(empty), keep)


def test_relevance_sign_prefers_the_query_direction():
    """Orthonormal tokens (equal similarity); the one along the query must win, not the orthogonal ones."""
    eye = torch.eye(4)
    features = eye.reshape(1, 2, 2, 4)
    positions = torch.zeros(3, 1, 2, 2, dtype=torch.long)
    for target in range(4):
        query = (3.0 * eye[target] + 0.1 * eye[(target + 1) % 4])[None]  # mostly token `target`
        keep = CDPrunerMethod(tokens_per_frame=1).select(VideoTokens(features, positions, query=query))
        assert keep.tolist() == [target]
        two = CDPrunerMethod(tokens_per_frame=2).select(VideoTokens(features, positions, query=query))
        assert two.tolist() == sorted([target, (target + 1) % 4])  # then the next most relevant


def test_relevance_normalisation_clip_or_frame():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(3, 10, 8, generator=g)
    features[0] += 2 * torch.ones(8)  # frame 0 leans towards the query
    query = torch.ones(2, 8)
    clip, frame = relevance(features, query, "clip"), relevance(features, query, "frame")
    raw = torch.nn.functional.normalize(features, dim=-1) @ torch.nn.functional.normalize(query, dim=-1).mean(0)
    low, span = raw.min(), raw.max() - raw.min()
    torch.testing.assert_close(clip, (raw - low + 1e-6) / span)
    lows, spans = raw.amin(1, keepdim=True), raw.amax(1, keepdim=True) - raw.amin(1, keepdim=True)
    torch.testing.assert_close(frame, (raw - lows + 1e-6) / spans)
    assert float(clip[1:].max()) < float(clip[0].max())  # clip: frames compete; frame: each spans [0, 1]
    torch.testing.assert_close(frame.amax(1), torch.ones(3), rtol=0, atol=1e-4)
    assert torch.equal(relevance(torch.ones(1, 4, 8), query), torch.ones(1, 4))  # constant: no division by zero


def test_exact_counts_per_frame_and_total():
    video = grid_video(t=8, h=6, w=6, d=16)  # 36 tokens per frame
    method = CDPrunerMethod(tokens_per_frame=5)
    keep = method.select(video)
    assert torch.bincount(keep // 36, minlength=8).tolist() == [5] * 8
    assert method.last_counts["total"] == 40 == keep.unique().numel() and torch.equal(keep, keep.sort().values)
    method = CDPrunerMethod(budget=30)  # 3 each, the remainder 6 to the earliest frames
    keep = method.select(video)
    assert torch.bincount(keep // 36, minlength=8).tolist() == [4] * 6 + [3] * 2
    assert method.last_counts["per_frame"] == [4] * 6 + [3] * 2 and keep.unique().numel() == 30
    method = CDPrunerMethod(budget=0.1)  # floor(0.1 * 288) = 28: 3 each, 4 to the first frames
    assert torch.bincount(method.select(video) // 36, minlength=8).tolist() == [4] * 4 + [3] * 4
    assert CDPrunerMethod(budget=5).select(video).numel() == 5  # fewer than frames: earliest frames, exact
    assert frame_counts(300, 8, 40).tolist() == [38] * 4 + [37] * 4 and frame_counts(300, 8, 36).tolist() == [36] * 8


def test_budget_knob_overrides_tokens_per_frame_and_caps():
    video = grid_video(t=2, h=3, w=3, d=16, deepstack=1)
    assert CDPrunerMethod(tokens_per_frame=2, budget=10).select(video).numel() == 10
    for method in (CDPrunerMethod(tokens_per_frame=50), CDPrunerMethod(budget=10_000), CDPrunerMethod(budget=1.0)):
        out = method(video)  # above full keeps everything
        full = FullMethod()(video)
        assert torch.equal(out.features, full.features) and torch.equal(out.deepstack[0], full.deepstack[0])
        assert torch.equal(out.positions, full.positions)


def test_rank_deficient_kernel_falls_back_to_relevance():
    """D=2 features, N=9 tokens, 6 picks: rank(L) <= 2, so 2 DPP picks then the 4 most relevant."""
    g = torch.Generator().manual_seed(3)
    features = torch.randn(1, 3, 3, 2, generator=g)
    query = torch.randn(2, 2, generator=g)
    video = VideoTokens(features, torch.zeros(3, 1, 3, 3, dtype=torch.long), query=query)
    method = CDPrunerMethod(tokens_per_frame=6)
    keep = method.select(video)
    assert keep.numel() == keep.unique().numel() == 6
    assert method.last_counts["fallback_picks"] == 4
    flat = features.reshape(1, 9, 2)
    rel = relevance(flat, query)
    kernel = conditional_kernel(flat, rel)
    picks, steps = greedy_map(kernel, 6, rel)
    assert steps.tolist() == [2] and picks[0, :2].tolist() == naive_greedy(kernel[0], 2)
    rest = rel[0].clone()
    rest[picks[0, :2]] = float("-inf")
    assert picks[0, 2:].tolist() == rest.argsort(descending=True)[:4].tolist()
    assert keep.tolist() == sorted(picks[0].tolist())
    # every token of a rank-deficient kernel: a permutation, nothing NaN on the way
    picks, _ = greedy_map(kernel, 9, rel)
    assert sorted(picks[0].tolist()) == list(range(9))


def test_duplicate_tokens_are_not_picked_twice():
    """Plain DPP (no query: the min-max relevance would give the least relevant token ~0 quality)."""
    base = torch.randn(1, 1, 4, 8, generator=torch.Generator().manual_seed(0))
    features = torch.cat([base, base], dim=1)  # every token appears twice
    video = VideoTokens(features, torch.zeros(3, 1, 2, 4, dtype=torch.long))
    keep = CDPrunerMethod(tokens_per_frame=4).select(video)
    assert sorted((keep % 4).tolist()) == [0, 1, 2, 3]  # diversity: one copy of each


@pytest.mark.parametrize("knobs, message", [
    ({"tokens_per_frame": 0}, "tokens_per_frame"), ({"tokens_per_frame": 2.5}, "tokens_per_frame"),
    ({"budget": 0}, "at least 1"), ({"budget": -3}, "at least 1"), ({"budget": 1.5}, "ratio"),
    ({"budget": "64"}, "budget"), ({"relevance_norm": "batch"}, "relevance_norm"), ({"eps": 0.0}, "eps"),
])
def test_bad_knobs(knobs, message):
    with pytest.raises(CompressionError, match=message):
        CDPrunerMethod(**knobs)


def test_one_frame_one_token():
    video = grid_video(t=1, h=1, w=1, d=4)
    assert CDPrunerMethod(tokens_per_frame=3).select(video).tolist() == [0]


@pytest.mark.parametrize("family", ["qwen2vl", "qwen3vl"])
def test_adapter_full_budget_equals_full(family, loaded, videos):
    model, processor = loaded[family]
    adapter = ADAPTERS[family](model, processor)
    assert_inputs_and_logits_equal_full(model, adapter, prepare(processor, [videos[3]["video"]]), CDPrunerMethod(budget=1.0))


@pytest.mark.parametrize("family", ["qwen2vl", "qwen3vl"])
def test_adapter_batch_of_two_equals_two_single_runs(family, loaded, videos):
    model, processor = loaded[family]
    adapter = ADAPTERS[family](model, processor)
    method = CDPrunerMethod(tokens_per_frame=7)
    paths = [videos[1]["video"], videos[4]["video"]]
    settings = {"max_new_tokens": 4, "do_sample": False, "output_logits": True, "return_dict_in_generate": True}
    singles = []
    for path, frames in zip(paths, (8, 4)):
        kwargs, stats = adapter.compress_inputs(prepare(processor, [path], frames), method)
        assert stats[0].visual_tokens_after == 7 * int(prepare(processor, [path], frames)["video_grid_thw"][0, 0])
        out = adapter.generate(kwargs, settings, method)
        singles.append((out.sequences[0, kwargs["input_ids"].shape[1]:], out.logits[0][0], kwargs))
    kwargs, stats = adapter.compress_inputs(prepare(processor, paths, (8, 4)), method)
    assert stats[0].visual_tokens_after != stats[1].visual_tokens_after
    out = adapter.generate(kwargs, settings, method)
    length = kwargs["input_ids"].shape[1]
    for row, (tokens, first_logits, single) in enumerate(singles):
        n = single["input_ids"].shape[1]
        assert torch.equal(kwargs["input_ids"][row, length - n:], single["input_ids"][0])
        assert torch.equal(kwargs["position_ids"][1:, row, length - n:], single["position_ids"][1:, 0])
        torch.testing.assert_close(out.logits[0][row], first_logits, rtol=1e-4, atol=1e-4)
        assert torch.equal(out.sequences[row, length:][: tokens.numel()], tokens)
