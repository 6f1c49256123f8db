"""AdaReTaKe (``core/adaretake.py`` + ``models/stages/adaretake.py``): allocation rules by hand,
exact budgets, cache lengths through the stage, identity at full budget, batching, long clips."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch

from freres_lmms.core.adaretake import (
    AdaReTaKeMethod,
    apportion,
    bisection_projection,
    chunk_bounds,
    chunk_scores,
    heavy_hitter_counts,
    keep_counts,
    layer_allocation,
    temporal_distances,
    temporal_ratios,
    topk_keep,
)
from freres_lmms.core.base import CompressionError, VideoTokens
from freres_lmms.core.full import FullMethod
from freres_lmms.models import ADAPTERS
from freres_lmms.models.stages import adaretake as stage

GREEDY = {"max_new_tokens": 6, "do_sample": False, "output_logits": True, "return_dict_in_generate": True}
FAMILIES = ("qwen2vl", "qwen2_5vl", "qwen3vl")


def grid_video(t, h=2, w=2, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    ti, hi, wi = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return VideoTokens(torch.randn(t, h, w, d, generator=g), torch.stack([ti + 5, hi + 5, wi + 5]))


def frames_inputs(processor, counts, size=56, seed=0):
    """Processor outputs for one prompt per clip of random ``size``-pixel frames (``counts`` frames
    each); clip ``i`` is drawn from seed ``seed + i``, so a clip is the same alone or in a batch."""
    clips = [torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed + i), dtype=torch.uint8)
             for i, n in enumerate(counts)]
    meta = [{"fps": 2.0, "frames_indices": list(range(n)), "total_num_frames": n} for n in counts]
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Which way?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return dict(processor(text=[text] * len(counts), videos=clips, video_metadata=meta, padding=True, return_tensors="pt"))


# -- pure functions, hand-computed ---------------------------------------------------------------
def test_bisection_projection_hits_sum_and_bounds():
    out = bisection_projection(torch.tensor([0.2, 0.5, 2.0]), 1.5)  # mu = 0.1, the last one capped at 1
    torch.testing.assert_close(out, torch.tensor([0.1, 0.4, 1.0], dtype=torch.float64))
    out = bisection_projection(torch.tensor([0.0, 1.0]), 0.6)  # the first one floored at 1e-3: mu = 0.401
    torch.testing.assert_close(out, torch.tensor([0.001, 0.599], dtype=torch.float64))
    out = bisection_projection(torch.tensor([0.9, 0.1]), 2.0, weights=torch.tensor([1.0, 3.0]))
    assert abs(float((out * torch.tensor([1.0, 3.0])).sum()) - 2.0) < 1e-9 and out.min() >= 1e-3 and out.max() <= 1


def test_temporal_ratios_chunk_mean_by_hand():
    # three one-slice chunks with means e1, e1, e2: d = [0, 0.5, 0.5] (ends padded), mean 1/3
    means = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    bounds = chunk_bounds(3, 1)
    torch.testing.assert_close(temporal_distances(means, bounds, "chunk_mean"), torch.tensor([0.0, 0.5, 0.5]))
    ratios = temporal_ratios(means, bounds, 0.3, "chunk_mean")  # raw 0.3 * d / mean = [0, .45, .45]
    torch.testing.assert_close(ratios, torch.tensor([0.001, 0.4495, 0.4495], dtype=torch.float64))
    assert torch.equal(temporal_ratios(means, bounds, 0.3, "off"), torch.full((3,), 0.3, dtype=torch.float64))
    assert torch.equal(temporal_ratios(means, bounds, 1.0, "chunk_mean"), torch.ones(3, dtype=torch.float64))


def test_temporal_ratios_adjacent_frames_by_hand():
    # slice 1 differs from slice 0 in one of two token positions (distance 1/2), slice 2 = slice 1
    f = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [1.0, 0.0]]])
    bounds = chunk_bounds(3, 1)
    torch.testing.assert_close(temporal_distances(f, bounds, "adjacent_frames"), torch.tensor([0.5, 0.5, 0.0]))
    ratios = temporal_ratios(f, bounds, 0.5, "adjacent_frames")  # raw [.75, .75, 0], total 1.5
    torch.testing.assert_close(ratios, torch.tensor([0.7495, 0.7495, 0.001], dtype=torch.float64))
    with pytest.raises(CompressionError, match="adjacent_frames"):
        temporal_distances(f.mean(1), bounds, "adjacent_frames")


def test_chunk_scores_by_hand_and_sum_to_prompt():
    # one KV group, two heads, one query: head 0 logits [0, ln 3] -> [.25, .75]; head 1 -> [.5, .5]
    q = torch.tensor([[[1.0]], [[0.0]]])
    k = torch.tensor([[[0.0], [math.log(3.0)]]])
    torch.testing.assert_close(chunk_scores(q, k), torch.tensor([0.375, 0.625]))
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(8, 5, 16, generator=g), torch.randn(2, 11, 16, generator=g)
    s = chunk_scores(q, k)
    assert s.shape == (11,) and abs(float(s.sum()) - 5.0) < 1e-5
    # query head h reads KV group h // 4 (repeat_kv)
    ref = (q @ k.repeat_interleave(4, 0).transpose(1, 2) / 4.0).softmax(-1).sum(1).mean(0)
    torch.testing.assert_close(s, ref)


def test_layer_allocation_rules_by_hand():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6], [0.5, 0.001, 0.002, 0.0]])
    # adakv: B = floor(max(1, .5 * 4) * 2) = 4, all top-4 in layer 0: n = [4, 0] -> 2 * .5 * [5, 1] / 6
    alpha_l = layer_allocation(scores, 0.5, "adakv")
    torch.testing.assert_close(alpha_l, torch.tensor([5 / 6, 1 / 6], dtype=torch.float64))
    assert keep_counts(alpha_l, 4).tolist() == [3, 1]
    assert layer_allocation(scores, 0.5, "even").tolist() == [0.5, 0.5]
    assert heavy_hitter_counts(scores, 0.01).tolist() == [4, 1]  # > 0.009 and > 0.005
    torch.testing.assert_close(layer_allocation(scores, 0.5, "heavy_hitter"), torch.tensor([0.8, 0.2], dtype=torch.float64))
    with pytest.raises(CompressionError, match="layer rule"):
        layer_allocation(scores, 0.5, "nope")


def test_keep_counts_floor_cap_and_topk():
    assert keep_counts(torch.tensor([0.004, 0.5, 1.7]), 10).tolist() == [1, 5, 10]  # 0.01 floor, max 1, cap Lc
    kept = topk_keep(torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.3, 0.3, 0.3, 0.0]]), torch.tensor([2, 1]))
    assert [k.tolist() for k in kept] == [[1, 3], [0]]  # prompt order; ties to the earlier key


def test_apportion_exact_within_bounds():
    assert apportion(torch.tensor([2.5, 2.5, 0.2]), 5, 1, 4).tolist() == [2, 2, 1]
    assert apportion(torch.tensor([10 / 3, 2 / 3]), 4, 1, 4).tolist() == [3, 1]
    assert apportion(torch.tensor([1.5, 1.5, 1.0]), 5, 1, 3).tolist() == [2, 2, 1]  # remainder tie: lower index
    with pytest.raises(CompressionError):
        apportion(torch.tensor([1.0, 1.0]), 1, 1, 4)


# -- the method's plan -------------------------------------------------------------------------
def test_plan_budget_is_exact_and_official_floors_stay_close():
    video = grid_video(16)  # 64 tokens, chunk_frames 8 -> 4 chunks of 16
    for budget, target in ((19, 19), (0.3, 19), (7, 7)):
        method = AdaReTaKeMethod(budget=budget, chunk_frames=8)
        plan = method.plan(video.features)
        assert plan.target == int(plan.budgets.sum()) == target
        assert (plan.budgets >= 1).all() and (plan.budgets <= plan.lengths).all()
    official = AdaReTaKeMethod(budget=19, chunk_frames=8, exact_budget=False).plan(video.features)
    assert 19 - official.num_chunks <= int(official.budgets.sum()) <= 19


def test_plan_max_input_length_mapping_and_chunking():
    video = grid_video(8)  # 32 tokens
    # alpha = 20 / (32 + 8) = 0.5 -> floor(16), capped at 20 - 8 = 12 text-free room
    assert AdaReTaKeMethod(max_input_length=20).plan(video.features, text_tokens=8).target == 12
    assert AdaReTaKeMethod(max_input_length=100).plan(video.features, text_tokens=8).target == 32
    plan = AdaReTaKeMethod(chunk_frames=32).plan(video.features)  # fewer slices than a chunk: one chunk
    assert plan.bounds.tolist() == [0, 8] and not plan.compresses(0)
    plan = AdaReTaKeMethod(chunk_frames=6, budget=10).plan(video.features)  # 3 slices a chunk, last one short
    assert plan.bounds.tolist() == [0, 3, 6, 8] and plan.lengths.tolist() == [12, 12, 8]
    assert AdaReTaKeMethod(budget=1).plan(grid_video(1).features).budgets.tolist() == [1]  # one slice
    assert AdaReTaKeMethod(budget=1000).plan(video.features).budgets.tolist() == [32]  # above full: keep all
    with pytest.raises(CompressionError, match="below one per chunk"):
        AdaReTaKeMethod(budget=3, chunk_frames=2).plan(video.features)
    with pytest.raises(CompressionError, match="no room"):
        AdaReTaKeMethod(max_input_length=8).plan(video.features, text_tokens=8)
    leak = AdaReTaKeMethod(budget=10, chunk_frames=4, clear_first_chunk_scores=False).plan(video.features)
    assert int(leak.budgets[0]) == 8 and not leak.compresses(0)


@pytest.mark.parametrize("knobs, match", [
    ({"budget": 0}, "at least 1"), ({"budget": -2}, "at least 1"), ({"budget": 1.5}, r"\(0, 1\]"),
    ({"budget": "12"}, "token count"), ({"chunk_frames": 3}, "even"), ({"chunk_frames": 0}, "positive"),
    ({"max_input_length": True}, "positive"), ({"temporal_rule": "x"}, "temporal_rule"),
    ({"layer_rule": "x"}, "layer_rule"), ({"max_guide_length": 0}, "positive"), ({"heavy_hitter_p": 1.0}, "heavy_hitter_p"),
])
def test_knobs_validated(knobs, match):
    with pytest.raises(CompressionError, match=match):
        AdaReTaKeMethod(**knobs)


def test_compress_passes_the_video_whole_and_records_the_plan():
    video = grid_video(6)
    method = AdaReTaKeMethod(budget=0.5, chunk_frames=4)
    out = method(video)
    assert out.num_tokens == video.num_tokens and torch.equal(out.kept, torch.arange(24))
    assert torch.equal(out.features, video.features.reshape(24, -1))
    assert method.last_plan.bounds.tolist() == [0, 2, 4, 6] and method.last_counts["total"] == 12


# -- through the stage on the tiny checkpoints -----------------------------------------------------
@pytest.mark.parametrize("family", ("qwen2vl", "qwen2_5vl", "qwen3vl"))
def test_full_budget_equals_full_method(family, loaded):
    model, processor = loaded[family]
    adapter = ADAPTERS[family](model, processor)
    inputs = frames_inputs(processor, [16])
    kwargs, _ = adapter.compress_inputs(inputs, FullMethod())
    plain = model.generate(**kwargs, **GREEDY)
    method = AdaReTaKeMethod(chunk_frames=4)  # 4 chunks, alpha = 1 at max_input_length 16000
    ours_kwargs, stats = adapter.compress_inputs(inputs, method)
    ours = adapter.generate(ours_kwargs, GREEDY, method, stats)
    assert torch.equal(ours.sequences, plain.sequences)
    for a, b in zip(ours.logits, plain.logits):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
    assert stats[0].kv_visual_tokens == stats[0].visual_tokens_before == 32
    assert method.last_counts["per_chunk"].tolist() == [[8, 8]] * 4
    assert model.config.text_config._attn_implementation == "sdpa"  # switched back


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layer_rule, temporal_rule", [("adakv", "chunk_mean"), ("even", "adjacent_frames"),
                                                        ("heavy_hitter", "off")])
def test_cache_lengths_match_allocation_and_budget(family, layer_rule, temporal_rule, loaded):
    model, processor = loaded[family]
    adapter = ADAPTERS[family](model, processor)
    method = AdaReTaKeMethod(budget=11, chunk_frames=4, layer_rule=layer_rule, temporal_rule=temporal_rule)
    kwargs, stats = adapter.compress_inputs(frames_inputs(processor, [16]), method)
    adapter.generate(kwargs, {"max_new_tokens": 3, "do_sample": False}, method, stats)
    counts = method.last_counts
    per_chunk, plan = counts["per_chunk"], counts["plan"]
    layers = model.config.text_config.num_hidden_layers
    assert per_chunk.shape == (4, layers)
    assert per_chunk.sum(1).tolist() == (plan.budgets * layers).tolist()  # each chunk's budget, exactly
    assert (per_chunk >= 1).all() and (per_chunk <= plan.lengths[:, None]).all()
    if layer_rule == "even":
        assert (per_chunk == plan.budgets[:, None]).all()
    assert counts["total"] == stats[0].kv_visual_tokens == 11  # stored visual KV, mean over layers
    # real cache lengths after prefill: every text token + that layer's kept video entries
    assert counts["cache_lengths"] == [counts["text"] + int(k) for k in per_chunk.sum(0)]
    assert counts["text"] == int(kwargs["attention_mask"][0].sum()) - 32
    # during prefill a layer holds at most its final length + one chunk + the guide prompt
    for peak, final in zip(counts["peak"], counts["cache_lengths"]):
        assert peak <= final + 8 + counts["guide"]


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_of_two_equals_two_single_runs(family, loaded):
    model, processor = loaded[family]
    adapter = ADAPTERS[family](model, processor)
    method = AdaReTaKeMethod(budget=0.4, chunk_frames=4)
    singles = []
    for seed, frames in ((1, 16), (2, 8)):
        kwargs, stats = adapter.compress_inputs(frames_inputs(processor, [frames], seed=seed), method)
        out = adapter.generate(kwargs, GREEDY, method, stats)
        singles.append((out.sequences[0, kwargs["input_ids"].shape[1]:], out.logits[0][0], stats[0].kv_visual_tokens))
    kwargs, stats = adapter.compress_inputs(frames_inputs(processor, [16, 8], seed=1), method)
    out = adapter.generate(kwargs, GREEDY, method, stats)
    length = kwargs["input_ids"].shape[1]
    assert torch.equal(out.sequences[:, :length], kwargs["input_ids"])
    for row, (tokens, first_logits, kv) in enumerate(singles):
        assert torch.equal(out.sequences[row, length:length + tokens.numel()], tokens)
        torch.testing.assert_close(out.logits[0][row], first_logits, rtol=1e-4, atol=1e-4)
        assert stats[row].kv_visual_tokens == kv
    assert singles[0][2] != singles[1][2]


def test_long_clip_stays_within_fixed_memory(loaded):
    """1024 frames (512 slices, 2048 video tokens) and 256 frames under one max_input_length: the
    stored length stays within it, and the prefill's peak is bounded independently of the clip."""
    model, processor = loaded["qwen2vl"]
    adapter = ADAPTERS["qwen2vl"](model, processor)
    peaks = {}
    for frames in (256, 1024):
        method = AdaReTaKeMethod(max_input_length=200, chunk_frames=16)  # 8 slices = 32 tokens a chunk
        kwargs, stats = adapter.compress_inputs(frames_inputs(processor, [frames]), method)  # 4 tokens a slice
        out = adapter.generate(kwargs, {"max_new_tokens": 2, "do_sample": False}, method, stats)
        counts = method.last_counts
        text, guide = counts["text"], counts["guide"]
        assert int(kwargs["attention_mask"][0].sum()) - text == frames * 2
        assert text + counts["total"] <= 200  # the stored KV (mean over layers) fits max_input_length
        assert max(counts["cache_lengths"]) <= text + 2 * counts["total"]  # adakv: a layer takes at most L x
        chunk = int(counts["plan"].lengths.max())
        mean_peak = sum(counts["peak"]) / len(counts["peak"])
        assert mean_peak <= 200 + chunk + guide  # never past text + budget + one chunk + prompt
        peaks[frames] = mean_peak
        assert out.shape[1] > kwargs["input_ids"].shape[1]
    assert abs(peaks[1024] - peaks[256]) <= 40  # fixed memory: 4x the frames, about the same peak


def test_guide_truncation_and_greedy_only(loaded):
    model, processor = loaded["qwen2vl"]
    adapter = ADAPTERS["qwen2vl"](model, processor)
    method = AdaReTaKeMethod(budget=8, chunk_frames=4, max_guide_length=3)
    kwargs, stats = adapter.compress_inputs(frames_inputs(processor, [8]), method)
    adapter.generate(kwargs, {"max_new_tokens": 2, "do_sample": False}, method, stats)
    assert method.last_counts["guide"] == 3
    assert max(method.last_counts["peak"]) <= max(method.last_counts["cache_lengths"]) + 8 + 3
    with pytest.raises(CompressionError, match="greedy"):
        adapter.generate(kwargs, {"max_new_tokens": 2, "do_sample": True}, method, stats)
    with pytest.raises(CompressionError, match="unsupported"):
        adapter.generate(kwargs, {"max_new_tokens": 2, "do_sample": False, "min_length": 3}, method, stats)


def test_first_chunk_leak_option_keeps_chunk_one(loaded):
    model, processor = loaded["qwen3vl"]
    adapter = ADAPTERS["qwen3vl"](model, processor)
    method = AdaReTaKeMethod(budget=10, chunk_frames=4, clear_first_chunk_scores=False)
    kwargs, stats = adapter.compress_inputs(frames_inputs(processor, [16]), method)
    adapter.generate(kwargs, {"max_new_tokens": 1, "do_sample": False}, method, stats)
    per_chunk = method.last_counts["per_chunk"]
    assert per_chunk[0].tolist() == [8, 8]  # chunk 1 whole; the rest share the budget as planned
    assert stats[0].kv_visual_tokens == method.last_counts["plan"].target > 10


def test_attention_switch_is_scoped(loaded):
    model, _ = loaded["qwen2vl"]
    lm = model.model.language_model
    with pytest.raises(RuntimeError), stage.adaretake_attention(lm):
        assert lm.config._attn_implementation == stage.ATTENTION
        assert model.config.vision_config._attn_implementation == "sdpa"
        raise RuntimeError
    assert lm.config._attn_implementation == "sdpa" and stage._ACTIVE[0] is None


@dataclass
class RecordingMethod(AdaReTaKeMethod):
    """Records each compressed chunk's scores and per-layer kept indices (test-only)."""

    seen: list = field(default_factory=list, repr=False)

    def compress_chunk(self, scores, plan, chunk):
        counts, keep = super().compress_chunk(scores, plan, chunk)
        self.seen.append((chunk, scores.clone(), keep))
        return counts, keep


def test_scores_and_cache_match_a_hand_built_layer_zero(loaded, monkeypatch):
    """Layer 0's queries and keys depend only on the embeddings and positions, so its chunk scores
    and its final cache can be rebuilt by hand from the stock projections and M-RoPE."""
    from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb

    model, processor = loaded["qwen2vl"]
    adapter = ADAPTERS["qwen2vl"](model, processor)
    method = RecordingMethod(budget=9, chunk_frames=4)
    kwargs, stats = adapter.compress_inputs(frames_inputs(processor, [16]), method)
    caches = []
    prefill = stage._Prefill.prefill
    monkeypatch.setattr(stage._Prefill, "prefill", lambda self: (caches.append(self.cache), prefill(self))[1])
    adapter.generate(kwargs, {"max_new_tokens": 1, "do_sample": False}, method, stats)  # no decode step

    lm = model.model.language_model
    attn = lm.layers[0].self_attn
    ids, pos = kwargs["input_ids"][0], kwargs["position_ids"][:, 0]
    video = (ids == model.config.video_token_id).nonzero().squeeze(1)
    embeds = lm.embed_tokens(ids).clone()
    embeds[video] = kwargs["mm_encoder_outputs"]["video"].pooler_output[0]

    def layer0_qk(rows, positions):
        x = lm.layers[0].input_layernorm(embeds[rows][None])
        q = attn.q_proj(x).view(1, len(rows), -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(1, len(rows), -1, attn.head_dim).transpose(1, 2)
        cos, sin = lm.rotary_emb(x, positions[:, None])
        return apply_rotary_pos_emb(q, k, cos, sin)

    guide = torch.arange(int(video[-1]) + 1, ids.numel())
    with torch.no_grad():
        for chunk, scores, _ in method.seen:
            seq = video[8 * chunk: 8 * chunk + 8]
            shifted = pos[1:, guide] - pos[1:, guide[:1]] + pos[1:, seq].max() + 1
            q, k = layer0_qk(torch.cat([seq, guide]), torch.cat([pos[1:, seq], shifted], 1))
            q = q[0, :, 8:]
            k = k[0].repeat_interleave(q.shape[0] // k.shape[1], 0)[:, :8]
            ref = (q @ k.transpose(1, 2) * attn.head_dim ** -0.5).softmax(-1).sum(1).mean(0)
            torch.testing.assert_close(scores[0], ref, rtol=1e-4, atol=1e-5)
        kept = torch.ones_like(ids, dtype=torch.bool)
        kept[video] = False
        for chunk, _, keep in method.seen:
            kept[video[8 * chunk + keep[0]]] = True
        _, k_all = layer0_qk(torch.arange(ids.numel()), pos[1:])
    assert len(method.seen) == 4 and int(kept[video].sum()) == int(method.last_counts["per_layer"][0])
    torch.testing.assert_close(caches[0].layers[0].keys, k_all[:, :, kept], rtol=1e-4, atol=1e-5)


def test_one_slice_clip_and_text_only_prompt(loaded):
    model, processor = loaded["qwen3vl"]
    adapter = ADAPTERS["qwen3vl"](model, processor)
    method = AdaReTaKeMethod(budget=1)
    kwargs, stats = adapter.compress_inputs(frames_inputs(processor, [2]), method)  # one slice of 4 tokens
    adapter.generate(kwargs, {"max_new_tokens": 2, "do_sample": False}, method, stats)
    assert method.last_counts["per_chunk"].tolist() == [[1, 1]] and stats[0].kv_visual_tokens == 1
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "Hi?"}]}],
                                         tokenize=False, add_generation_prompt=True)
    inputs = dict(processor(text=[text], return_tensors="pt"))
    kwargs, stats = adapter.compress_inputs(inputs, method)
    plain = model.generate(**kwargs, **GREEDY)
    ours = adapter.generate(kwargs, GREEDY, method, stats)
    assert torch.equal(ours.sequences, plain.sequences) and stats[0].kv_visual_tokens == 0


def test_official_floors_through_the_stage(loaded):
    """``exact_budget=False``: each chunk's per-layer counts are the official
    ``keep_counts(adakv(scores, alpha_c))`` of its scores."""
    model, processor = loaded["qwen2vl"]
    adapter = ADAPTERS["qwen2vl"](model, processor)
    method = RecordingMethod(budget=11, chunk_frames=4, exact_budget=False)
    kwargs, stats = adapter.compress_inputs(frames_inputs(processor, [16]), method)
    adapter.generate(kwargs, {"max_new_tokens": 1, "do_sample": False}, method, stats)
    plan, per_chunk = method.last_counts["plan"], method.last_counts["per_chunk"]
    assert len(method.seen) == 4
    for chunk, scores, keep in method.seen:
        expected = keep_counts(layer_allocation(scores, float(plan.ratios[chunk]), "adakv"), 8)
        assert per_chunk[chunk].tolist() == expected.tolist() == [k.numel() for k in keep]
