"""DyCoke (``core/dycoke.py`` + ``models/stages/dycoke.py``): TTM counts and picks, budget, decode pruning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_adapters import prepare, reference_logits

from freres_lmms.core.base import CompressionError, VideoTokens
from freres_lmms.core.dycoke import (
    DecodeSelection,
    DyCokeMethod,
    TTMPlan,
    decode_attention_row,
    prunable_visual,
)
from freres_lmms.core.full import FullMethod
from freres_lmms.models import ADAPTERS
from freres_lmms.models.base import CompressionStats
from freres_lmms.models.stages import dycoke as stage

GREEDY = {"do_sample": False, "output_logits": True, "return_dict_in_generate": True}


def grid_video(t, h=2, w=2, d=8, seed=0, deepstack=0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(t, h, w, d, generator=g)
    ti, hi, wi = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    positions = torch.stack([3 * ti + 5, hi + 5, wi + 5])
    return VideoTokens(features, positions, [features * (i + 2) for i in range(deepstack)])


def official_ttm(features, n_keep, drop_odd=True):
    """Literal transcription of the official per-frame loops (``dycole_ttm``), returning flat indices."""
    f, n, _ = features.shape
    frames = {}
    for i in range(0, f - 1, 2):
        sim = F.cosine_similarity(F.normalize(features[i], dim=1), F.normalize(features[i + 1], dim=1), dim=1)
        frames[i] = torch.arange(n)
        frames[i + 1] = sim.topk(n_keep, largest=False).indices
    for i in range(0, f - 4, 4):
        sim = F.cosine_similarity(features[i], features[i + 2], dim=1)
        frames[i + 2] = sim.topk(n_keep, largest=False).indices
    if not drop_odd and f % 2:
        frames[f - 1] = torch.arange(n)
    return torch.cat([frame * n + idx for frame, idx in frames.items()]).sort().values


# -- TTM -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames,per_frame,k", [(4, 16, 0.7), (8, 9, 0.5), (12, 4, 0.25), (32, 196, 0.7)])
def test_ttm_count_formula(frames, per_frame, k):
    side = math.isqrt(per_frame)
    video = grid_video(frames, side, per_frame // side, d=4)
    method = DyCokeMethod(k=k)
    out = method(video)
    n_keep = int((1 - k) * per_frame)
    expected = (frames // 4 + 1) * per_frame + (3 * frames // 4 - 1) * n_keep
    assert out.num_tokens == method.last_counts["total"] == expected
    if (frames, per_frame, k) == (32, 196, 0.7):
        assert expected == 3098


@pytest.mark.parametrize("frames,keep,drop", [
    (1, 4, None),  # one frame: nothing to pair; "drop" would leave nothing (error)
    (2, 4 + 2, 4 + 2),  # one pair, no window
    (3, 2 * 4 + 2, 4 + 2),  # the unpaired frame 2: kept whole, or dropped (official)
    (4, 2 * 4 + 2 * 2, 2 * 4 + 2 * 2),  # range(0, 0, 4) is empty: no stage 2
    (5, 2 * 4 + 3 * 2, 4 + 3 * 2),  # pairs prune 1, 3; window i=0 prunes 2; 0 and 4 whole
    (7, 3 * 4 + 4 * 2, 2 * 4 + 4 * 2),  # pairs prune 1, 3, 5; window i=0 prunes 2; 0, 4, 6 whole
])
def test_ttm_odd_and_few_frames(frames, keep, drop):
    video = grid_video(frames)  # N = 4, k = 0.5 -> n_keep = 2
    assert DyCokeMethod(k=0.5)(video).num_tokens == keep
    if drop is None:
        with pytest.raises(CompressionError, match="single frame"):
            DyCokeMethod(k=0.5, odd_last_frame="drop")(video)
    else:
        method = DyCokeMethod(k=0.5, odd_last_frame="drop")
        assert method(video).num_tokens == drop == method.last_counts["total"]
        assert method.last_counts["dropped_frames"] == frames % 2


def test_ttm_hand_built_reference():
    """6 frames of 2x2 unit vectors at chosen angles: cos similarity = cos(angle difference)."""
    angles = torch.tensor([
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 0.5, 0.1, 1.0],  # vs frame 0: least similar tokens 3, 1
        [0.2, 0.0, 0.7, 0.05],  # whole in stage 1; stage 2 (vs frame 0): least similar 2, 0
        [0.2, 0.9, 0.7, 0.35],  # vs frame 2: differences 0, .9, 0, .3 -> 1, 3
        [1.0, 1.0, 1.0, 1.0],  # whole (window i=4 is not < F-4 = 2)
        [1.1, 1.0, 1.6, 1.0],  # vs frame 4: differences .1, 0, .6, 0 -> 2, 0
    ])
    features = torch.stack([angles.cos(), angles.sin()], -1).reshape(6, 2, 2, 2)
    ti, hi, wi = torch.meshgrid(torch.arange(6), torch.arange(2), torch.arange(2), indexing="ij")
    positions = torch.stack([10 * ti, hi, wi])
    video = VideoTokens(features, positions, [features + 1])
    out = DyCokeMethod(k=0.5)(video)
    expected = torch.tensor([0, 1, 2, 3, 5, 7, 8, 10, 13, 15, 16, 17, 18, 19, 20, 22])
    assert torch.equal(out.kept, expected)
    assert torch.equal(out.slots, expected)
    # kept tokens keep their stock positions and DeepStack rows (gather)
    assert torch.equal(out.positions, positions.reshape(3, -1)[:, expected])
    assert torch.equal(out.features, features.reshape(24, 2)[expected])
    assert torch.equal(out.deepstack[0], (features + 1).reshape(24, 2)[expected])


@pytest.mark.parametrize("frames", [2, 3, 5, 8, 9, 16])
@pytest.mark.parametrize("odd_last_frame", ["keep", "drop"])
def test_ttm_matches_official_loops(frames, odd_last_frame):
    video = grid_video(frames, 3, 3, d=6, seed=frames)
    method = DyCokeMethod(k=0.6, odd_last_frame=odd_last_frame)
    kept = method(video).kept
    assert torch.equal(kept, official_ttm(video.features.reshape(frames, 9, 6), int(0.4 * 9), odd_last_frame == "drop"))


def test_k_zero_keeps_everything():
    video = grid_video(7)
    assert torch.equal(DyCokeMethod(k=0.0)(video).kept, torch.arange(28))


# -- budget --------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget,n_keep,total", [
    (98, 10, 98),  # F=8, N=16: count = 3*16 + 5*n_keep; exact
    (100, 10, 98),  # nearest below
    (48, 0, 48),  # whole frames only
    (128, 16, 128),  # everything
    (1000, 16, 128),  # above full: everything
    (0.5, 3, 63),  # ratio: 64 tokens -> n_keep 3
    (1.0, 16, 128),
])
def test_budget_solves_n_keep(budget, n_keep, total):
    method = DyCokeMethod(budget=budget, k=0.9)  # k is ignored under a budget
    out = method(grid_video(8, 4, 4))
    assert method.last_counts["n_keep"] == n_keep
    assert out.num_tokens == method.last_counts["total"] == total


def test_budget_below_minimum_and_single_frame():
    with pytest.raises(CompressionError, match="below TTM's minimum 48"):
        DyCokeMethod(budget=47)(grid_video(8, 4, 4))
    assert DyCokeMethod(budget=4)(grid_video(1)).num_tokens == 4  # one frame: nothing to prune
    with pytest.raises(CompressionError, match="minimum 4"):
        DyCokeMethod(budget=3)(grid_video(1))
    method = DyCokeMethod(budget=1000, odd_last_frame="drop")  # drop mode never reaches F*N
    assert method(grid_video(3)).num_tokens == 8 == method.last_counts["total"]
    assert TTMPlan.build(32).count(196, 58) == 3098


@pytest.mark.parametrize("knobs,match", [
    ({"k": -0.1}, "k must"), ({"k": 1.5}, "k must"), ({"k": "0.7"}, "k must"), ({"k": True}, "k must"),
    ({"prune_ratio": 1.2}, "prune_ratio"), ({"layer": 0}, "layer"), ({"layer": 2.0}, "layer"),
    ({"reselect": "paper"}, "reselect"), ({"odd_last_frame": "pad"}, "odd_last_frame"),
    ({"similarity_threshold": float("nan")}, "similarity_threshold"), ({"exclude_last_visual": 1}, "exclude_last"),
    ({"budget": 0}, "at least 1"), ({"budget": -3}, "at least 1"), ({"budget": 1.5}, "ratio"),
    ({"budget": "all"}, "budget"),
])
def test_bad_knobs(knobs, match):
    with pytest.raises(CompressionError, match=match):
        DyCokeMethod(**knobs)


# -- decode selection (model-free) ---------------------------------------------------------------


def test_prunable_span_misses_last_visual_token():
    visual = torch.tensor([[0, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    assert prunable_visual(visual).int().tolist() == [[0, 1, 1, 0, 0, 0], [0] * 6]
    assert torch.equal(prunable_visual(visual, exclude_last=False), visual)


@pytest.mark.parametrize("reselect", ["code", "reuse"])
def test_decode_selection_by_hand(reselect):
    prunable = torch.tensor([[False, True, True, True, True, False]])
    sel = DecodeSelection(prunable, prune_ratio=0.5, reselect=reselect)  # int(4 * 0.5) = 2 kept
    first = sel.step(torch.tensor([[0.5, 0.1, 0.4, 0.3, 0.05, 0.2, 0.9]]))  # key 6: the new token
    assert first.tolist() == [[True, False, True, True, False, True]]
    same = sel.step(torch.tensor([[0.1, 0.1, 0.41, 0.3, 0.06, 0.2, 0.2, 0.3]]))  # cos ~ 1 >= 0.9
    assert same is None if reselect == "code" else torch.equal(same, first)
    other = sel.step(torch.tensor([[0.1, 0.5, 0.0, 0.0, 0.4, 0.0, 0.0, 0.0, 0.1]]))  # dissimilar: re-select 1, 4
    assert other.tolist() == [[True, True, False, False, True, True]]
    counts = sel.counts
    assert counts["steps"] == 3 and counts["selected"] == [2] and counts["kept"] == [2] and counts["prunable"] == [4]
    assert counts["full" if reselect == "code" else "reused"] == [1]


def test_decode_attention_row_matches_repeated_heads():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 1, 8, generator=g), torch.randn(2, 2, 10, 8, generator=g)
    mask = torch.ones(2, 1, 1, 10, dtype=torch.bool)
    mask[0, ..., :3] = False  # left padding of row 0
    full_k = k.repeat_interleave(2, dim=1)
    scores = (q @ full_k.transpose(-1, -2)) * 0.3
    ref = scores.masked_fill(~mask, float("-inf")).softmax(-1).mean(1)[:, 0]
    torch.testing.assert_close(decode_attention_row(q, k, mask, 0.3), ref)
    float_mask = torch.zeros(2, 1, 1, 10).masked_fill(~mask, torch.finfo(torch.float32).min)
    torch.testing.assert_close(decode_attention_row(q, k, float_mask, 0.3), ref)


# -- through the adapters ------------------------------------------------------------------------

FAMILIES = ("qwen2vl", "qwen3vl")


def _text_impl(model):
    return model.config.get_text_config()._attn_implementation


@pytest.mark.parametrize("family", FAMILIES)
def test_positions_are_gathered_stock_positions(family, loaded, videos):
    model, processor = loaded[family]
    inputs = prepare(processor, [videos[0]["video"]])
    method = DyCokeMethod(k=0.6)
    kwargs, stats = ADAPTERS[family](model, processor).compress_inputs(inputs, method)
    encoded = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"], return_dict=True)
    t, h, w = (int(x) for x in inputs["video_grid_thw"][0])
    m = model.config.vision_config.spatial_merge_size
    features = encoded.pooler_output[0].reshape(t, h // m, w // m, -1)
    keep = DyCokeMethod(k=0.6).compress(VideoTokens(features, torch.zeros(3, t, h // m, w // m, dtype=torch.long))).kept
    assert stats[0].visual_tokens_after == keep.numel() == method.last_counts["total"]
    with torch.no_grad():
        torch.testing.assert_close(model(**kwargs).logits, reference_logits(model, inputs, keep), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_no_merging_no_pruning_equals_full(family, loaded, videos):
    model, processor = loaded[family]
    adapter = ADAPTERS[family](model, processor)
    inputs = prepare(processor, [videos[3]["video"]])
    full_kwargs, _ = adapter.compress_inputs(inputs, FullMethod())
    method = DyCokeMethod(k=0.0, prune_ratio=0.0, layer=1)
    kwargs, _ = adapter.compress_inputs(inputs, method)
    assert torch.equal(kwargs["input_ids"], full_kwargs["input_ids"])
    stock = model.generate(**full_kwargs, max_new_tokens=5, **GREEDY)
    ours = adapter.generate(kwargs, dict(max_new_tokens=5, **GREEDY), method)
    assert torch.equal(ours.sequences, stock.sequences)
    for a, b in zip(ours.logits, stock.logits):
        assert torch.equal(a, b)
    assert method.last_counts["decode"]["steps"] == 4  # the decode branch ran on every decode step
    assert _text_impl(model) == "sdpa"


def reference_generate(model, kwargs, method, steps):
    """Official-style DyCoke decode on eager attention: hooks read layer L-1's weights, mask layers >= L.

    Per row and per step, as in ``dycoke_pruning`` / ``update_cache`` (Python lists and topk),
    with the state reset for this call.
    """
    layers = model.model.language_model.layers
    vid = model.config.video_token_id
    spans = [(row == vid).nonzero().flatten()[:-1] for row in kwargs["input_ids"]]  # official n_vis = len - 1
    prompt = kwargs["input_ids"].shape[1]
    state = {"prev": [None] * len(spans), "sel": [None] * len(spans), "use": None,
             "counts": {"selected": [0] * len(spans), "similar": [0] * len(spans)}}

    def read(module, args, output):
        weights = output[1]
        if weights.shape[2] != 1:
            return
        avg = weights.float().mean(1)[:, -1]  # [B, K]
        use = []
        for b, span in enumerate(spans):
            image = avg[b, span]
            prev = state["prev"][b]
            state["prev"][b] = image
            # official: similarity = 0 without a previous row, so the first step selects (for any threshold <= 0 too)
            if prev is None or F.cosine_similarity(image, prev, dim=0) < method.similarity_threshold:
                state["sel"][b] = span[torch.topk(image, int(len(span) * (1 - method.prune_ratio))).indices]
                state["counts"]["selected"][b] += 1
                use.append(state["sel"][b])
            else:
                state["counts"]["similar"][b] += 1
                use.append(None if method.reselect == "code" else state["sel"][b])
        state["use"] = use

    def restrict(module, args, kw):
        mask = kw["attention_mask"]
        if kw["hidden_states"].shape[1] != 1:
            return None
        length = kw["past_key_values"].get_seq_length() + 1
        mask = torch.zeros(len(spans), 1, 1, length) if mask is None else mask.clone()
        for b, (span, use) in enumerate(zip(spans, state["use"])):
            if use is not None:
                dropped = span[~torch.isin(span, use)]
                mask[b, :, :, dropped] = torch.finfo(mask.dtype).min
        assert length > prompt
        return args, {**kw, "attention_mask": mask}

    handles = [layers[method.layer - 1].self_attn.register_forward_hook(read)]
    for layer in layers[method.layer:]:
        handles.append(layer.self_attn.register_forward_pre_hook(restrict, with_kwargs=True))
    model.set_attn_implementation({"text_config": "eager"})
    try:
        out = model.generate(**kwargs, max_new_tokens=steps, **GREEDY)
    finally:
        model.set_attn_implementation({"text_config": "sdpa"})
        for handle in handles:
            handle.remove()
    return out, state["counts"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("reselect,threshold", [("code", 0.9), ("code", 0.0), ("reuse", 0.0), ("code", 1.5)])
def test_decode_pruning_matches_official_style_reference(family, reselect, threshold, loaded, videos):
    model, processor = loaded[family]
    adapter = ADAPTERS[family](model, processor)
    method = DyCokeMethod(k=0.5, layer=1, prune_ratio=0.6, reselect=reselect, similarity_threshold=threshold)
    kwargs, stats = adapter.compress_inputs(prepare(processor, [videos[2]["video"]]), method)
    ours = adapter.generate(kwargs, dict(max_new_tokens=5, **GREEDY), method, stats)
    ref, ref_counts = reference_generate(model, kwargs, method, 5)
    assert torch.equal(ours.sequences, ref.sequences)
    for a, b in zip(ours.logits, ref.logits):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    decode = method.last_counts["decode"]
    assert decode["steps"] == 4 and decode["selected"] == ref_counts["selected"]
    assert decode["selected"][0] >= 1  # the pruning branch ran
    similar = decode["full"] if reselect == "code" else decode["reused"]
    assert similar == ref_counts["similar"]
    if threshold == 0.0:
        assert decode["selected"] == [1] and similar == [3]
    if threshold == 1.5:
        assert decode["selected"] == [4]
    n_vis = int((kwargs["input_ids"] == model.config.video_token_id).sum())
    assert decode["prunable"] == [n_vis - 1] and decode["kept"] == [int((n_vis - 1) * 0.4)]
    assert stats[0].kv_visual_tokens == n_vis  # the full cache is kept
    # and pruning changes the model's output at the first decode step
    stock = model.generate(**kwargs, max_new_tokens=2, **GREEDY)
    assert (ours.logits[1] - stock.logits[1]).abs().max() > 1e-4


@pytest.fixture(scope="module")
def deep_qwen3vl():
    """A 4-layer tiny Qwen3-VL, so that several layers lie at and beyond L."""
    from freres_lmms.data.checkpoints import TinySize, new_checkpoint

    model, processor = new_checkpoint("qwen3vl", 1, TinySize(layers=4))
    processor.tokenizer.padding_side = "left"
    return model.eval(), processor


@pytest.mark.parametrize("reselect,threshold", [("code", 0.945), ("reuse", 0.95), ("code", 1.5)])
def test_every_layer_from_l_is_pruned(deep_qwen3vl, reselect, threshold, videos):
    model, processor = deep_qwen3vl
    adapter = ADAPTERS["qwen3vl"](model, processor)
    method = DyCokeMethod(k=0.5, layer=2, prune_ratio=0.6, reselect=reselect, similarity_threshold=threshold)
    kwargs, _ = adapter.compress_inputs(prepare(processor, [videos[1]["video"]]), method)
    ours = adapter.generate(kwargs, dict(max_new_tokens=8, **GREEDY), method)
    ref, ref_counts = reference_generate(model, kwargs, method, 8)
    assert torch.equal(ours.sequences, ref.sequences)
    for a, b in zip(ours.logits, ref.logits):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    decode = method.last_counts["decode"]
    assert decode["selected"] == ref_counts["selected"]
    similar = decode["full" if reselect == "code" else "reused"][0]
    assert similar == ref_counts["similar"][0]
    if threshold < 1:  # both branches within one sample: re-selection and a similar step
        assert decode["selected"][0] >= 2 and similar >= 1


@pytest.mark.parametrize("family", FAMILIES)
def test_layers_below_l_unaffected(family, loaded, videos):
    """L = depth: the selection runs on every step but no layer >= L exists, so output = stock."""
    model, processor = loaded[family]
    adapter = ADAPTERS[family](model, processor)
    depth = model.config.get_text_config().num_hidden_layers
    method = DyCokeMethod(k=0.5, layer=depth, prune_ratio=0.9, similarity_threshold=1.5)
    kwargs, _ = adapter.compress_inputs(prepare(processor, [videos[5]["video"]]), method)
    ours = adapter.generate(kwargs, dict(max_new_tokens=4, **GREEDY), method)
    stock = model.generate(**kwargs, max_new_tokens=4, **GREEDY)
    assert torch.equal(ours.sequences, stock.sequences)
    for a, b in zip(ours.logits, stock.logits):
        assert torch.equal(a, b)
    assert method.last_counts["decode"]["selected"] == [3]
    with pytest.raises(ValueError, match="beyond the model's"):
        adapter.generate(kwargs, {"max_new_tokens": 2}, DyCokeMethod(layer=depth + 1))


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_of_two_equals_two_single_runs(family, loaded, videos):
    model, processor = loaded[family]
    adapter = ADAPTERS[family](model, processor)
    paths, frames = [videos[1]["video"], videos[4]["video"]], (8, 4)
    settings = dict(max_new_tokens=5, **GREEDY)
    singles = []
    for path, count in zip(paths, frames):
        method = DyCokeMethod(k=0.5, layer=1, prune_ratio=0.7)
        kwargs, _ = adapter.compress_inputs(prepare(processor, [path], count), method)
        out = adapter.generate(kwargs, settings, method)
        singles.append((out, kwargs["input_ids"].shape[1], method.last_counts["decode"]))
    method = DyCokeMethod(k=0.5, layer=1, prune_ratio=0.7)
    kwargs, stats = adapter.compress_inputs(prepare(processor, paths, frames), method)
    assert stats[0].visual_tokens_after != stats[1].visual_tokens_after  # different lengths: left padding
    out = adapter.generate(kwargs, settings, method)
    length = kwargs["input_ids"].shape[1]
    decode = method.last_counts["decode"]
    for row, (single, single_length, counts) in enumerate(singles):
        assert int(kwargs["attention_mask"][row].sum()) == single_length
        tokens = single.sequences[0, single_length:]
        assert torch.equal(out.sequences[row, length:length + tokens.numel()], tokens)
        for step, logits in enumerate(single.logits):
            torch.testing.assert_close(out.logits[step][row], logits[0], rtol=1e-4, atol=1e-4)
        assert decode["prunable"][row] == counts["prunable"][0] and decode["kept"][row] == counts["kept"][0]
        assert decode["selected"][row] == counts["selected"][0]


def test_attention_restored_when_generation_raises(loaded, videos):
    model, processor = loaded["qwen2vl"]
    adapter = ADAPTERS["qwen2vl"](model, processor)
    method = DyCokeMethod(k=0.5, layer=1)
    kwargs, _ = adapter.compress_inputs(prepare(processor, [videos[0]["video"]]), method)

    def boom(module, args, kw):
        if kw["hidden_states"].shape[1] == 1:
            raise RuntimeError("boom at decode")

    handle = model.model.language_model.layers[1].self_attn.register_forward_pre_hook(boom, with_kwargs=True)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            adapter.generate(kwargs, {"max_new_tokens": 3, "do_sample": False}, method, [CompressionStats()])
    finally:
        handle.remove()
    assert _text_impl(model) == "sdpa" and model.config._attn_implementation == "sdpa"
    assert stage._ACTIVE.get() is None


def test_sampling_runs(loaded, videos):
    model, processor = loaded["qwen2vl"]
    adapter = ADAPTERS["qwen2vl"](model, processor)
    method = DyCokeMethod(k=0.5, layer=1, prune_ratio=0.5)
    kwargs, _ = adapter.compress_inputs(prepare(processor, [videos[6]["video"]]), method)
    torch.manual_seed(0)
    settings = {"max_new_tokens": 4, "do_sample": True, "top_k": 5, "num_return_sequences": 2}
    out = adapter.generate(kwargs, settings, method)
    assert out.shape[0] == 2 and method.last_counts["decode"]["steps"] == 3
    assert len(method.last_counts["decode"]["selected"]) == 2
    with pytest.raises(ValueError, match="beam"):
        adapter.generate(kwargs, {"max_new_tokens": 2, "num_beams": 2}, method)
