"""Streams: every method fed a video in chunks of slices emits what it emits for the whole video.

The adapters run the vision tower one chunk of slices at a time and feed each chunk to the
method's stream (``Method.stream``); online methods keep only what they will use. Here the
core alone: random grids with DeepStack layers, chunk sizes from one slice to the whole clip.
"""

from __future__ import annotations

import pytest
import torch

from freres_lmms.core import (
    CompressionError,
    FourierMethod,
    FreResMethod,
    GridStream,
    SliceStream,
    VideoTokens,
    build_method,
)
from freres_lmms.core.freres import FreResStream
from freres_lmms.core.fourier import FourierStream

METHODS = {
    "full": lambda: build_method("full"),
    "uniform_stride": lambda: build_method("uniform", stride=3),
    "uniform_budget": lambda: build_method("uniform", budget=0.3),
    "fourier": lambda: build_method("fourier"),
    "fourier_budget_rescale": lambda: build_method("fourier", budget=0.2, rescale=True),
    "freres": lambda: build_method("freres", anchors=4, groups=3, statics=4, tau=0.05),
    "freres_budget": lambda: build_method("freres", anchors=4, budget=0.25),
    "freres_linear": lambda: build_method("freres", anchors=3, groups=2, mode="linear_concat"),
    "freres_temporal_only": lambda: build_method("freres", anchors=3, groups=2, mode="temporal_only", energy_floor=0.0),
    "freres_idct": lambda: build_method("freres", anchors=3, groups=2, mode="idct_reconstruction"),
    "freres_windows": lambda: build_method("freres", anchors=3, group_span=2),
    "dycoke": lambda: build_method("dycoke"),
    "cdpruner": lambda: build_method("cdpruner", budget=0.25),
}


def video(t=14, h=6, w=5, d=16, layers=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, h, w, d, generator=g)
    drift = torch.randn(t, h, w, d, generator=g).cumsum(0) * 0.3  # correlated slices, with residuals
    features = base + drift
    grid = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"))
    positions = grid + torch.tensor([5, 5, 5])[:, None, None, None]
    deepstack = [features * (i + 2) + 1 for i in range(layers)]
    query = torch.randn(4, d, generator=g)
    return VideoTokens(features, positions, deepstack, query, torch.tensor([True, True, True, False]))


def streamed(method, v: VideoTokens, chunk: int):
    stream = method.stream(v.grid)
    for lo in range(0, v.grid[0], chunk):
        stream.feed(v.features[lo:lo + chunk], [d[lo:lo + chunk] for d in v.deepstack])
    return stream.finish(v.positions, v.query, v.question)


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("chunk", [1, 3, 5, 14])
def test_stream_equals_whole_video(name, chunk):
    v = video()
    whole = METHODS[name]()(v)
    out = streamed(METHODS[name](), v, chunk)
    assert torch.equal(out.features, whole.features)
    assert torch.equal(out.positions, whole.positions)
    assert torch.equal(out.slots, whole.slots)
    assert len(out.deepstack) == len(whole.deepstack) == 2
    for a, b in zip(out.deepstack, whole.deepstack):
        assert torch.equal(a, b)


@pytest.mark.parametrize("knobs", [{}, {"odd_last_frame": "drop"}, {"budget": 0.6}, {"k": 0.3, "odd_last_frame": "drop"}])
@pytest.mark.parametrize("frames", [13, 9, 4, 1])
def test_dycoke_stream_window_by_window_equals_whole_video(knobs, frames):
    if frames == 1 and (knobs.get("odd_last_frame") == "drop" or "budget" in knobs):
        return  # refused: a single frame would be dropped, or is whole and above 60% (tested in test_dycoke)
    v = video(t=frames)
    whole = build_method("dycoke", **knobs)(v)
    for chunk in (1, 2, 3, 5, frames):
        out = streamed(build_method("dycoke", **knobs), v, chunk)
        assert torch.equal(out.slots, whole.slots) and torch.equal(out.features, whole.features)
        assert all(torch.equal(a, b) for a, b in zip(out.deepstack, whole.deepstack))


def test_online_streams_hold_only_what_they_emit():
    v = video(t=30)
    assert isinstance(build_method("uniform", stride=10).stream(v.grid), SliceStream)
    assert isinstance(build_method("cdpruner", budget=0.2).stream(v.grid), GridStream)
    dycoke = build_method("dycoke", k=0.5).stream(v.grid)
    for lo in range(0, 30, 7):
        dycoke.feed(v.features[lo:lo + 7], [d[lo:lo + 7] for d in v.deepstack])
        assert dycoke.pending == [] or dycoke.pending[0].shape[0] < 4  # at most a partial window waits
    assert sum(rows[0].shape[0] for _, rows in dycoke.kept) < 30 * 30  # only kept tokens are held
    with pytest.raises(CompressionError, match="below TTM's minimum"):  # refused before any chunk
        build_method("dycoke", budget=10).stream(v.grid)
    assert isinstance(FourierMethod().stream(v.grid), FourierStream)
    uniform = build_method("uniform", stride=10).stream(v.grid)
    freres = FreResMethod(anchors=3, groups=4, pool=2).stream(v.grid)
    for lo in range(0, 30, 4):
        for s in (uniform, freres):
            s.feed(v.features[lo:lo + 4], [d[lo:lo + 4] for d in v.deepstack])
    assert sum(c[0].shape[0] for c in uniform.kept) == 3  # slices 0, 10, 20
    assert isinstance(freres, FreResStream)
    assert [a.shape for a in freres.anchor_layers] == [torch.Size([3, 30, 16])] * 3  # 3 anchor slices per layer
    assert [p.shape for p in freres.pooled] == [torch.Size([30, 4, 16])] * 3  # 2x2 cells of every slice


def test_stream_refuses_bad_chunks():
    v = video()
    stream = build_method("freres", anchors=4).stream(v.grid)
    with pytest.raises(CompressionError, match=r"a chunk must be \[t, 6, 5, D\]"):
        stream.feed(v.features[:, :3])
    stream.feed(v.features[:10], [d[:10] for d in v.deepstack])
    with pytest.raises(CompressionError, match="carry 1 feature layers, earlier ones 3"):
        stream.feed(v.features[10:])
    with pytest.raises(CompressionError, match="10 of the video's 14 slices were fed"):
        stream.finish(v.positions)
    with pytest.raises(CompressionError, match="fed 24 slices to a 14-slice video"):
        stream.feed(v.features, list(v.deepstack))


# -- the adapters: chunked vision, streamed preprocessing ----------------------------------------

ADAPTER_METHODS = ["full", "uniform_budget", "fourier", "freres", "freres_budget", "dycoke", "cdpruner"]


def encoder_rows(kwargs):
    video = kwargs["mm_encoder_outputs"]["video"]
    return [torch.cat(video.pooler_output)] + [torch.cat(layer) for layer in (getattr(video, "deepstack_features", None) or [])]


@pytest.mark.parametrize("family", ["qwen2vl", "qwen2_5vl", "qwen3vl"])
def test_streamed_preprocessing_and_chunked_vision_equal_the_one_shot_path(family, loaded, videos):
    """Prompt, pixel values and, for every method, the LLM inputs and logits are those of the
    processor's one call with the vision tower run once on the whole video."""
    from freres_lmms.data.video import load_video
    from freres_lmms.models import ADAPTERS
    from freres_lmms.models.streaming import FrameSource, StreamTimer, streamed_inputs

    model, processor = loaded[family]
    clip = load_video(videos[2]["video"], 8).per_frame()  # 16 frames -> 8 slices
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moved?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    one_shot = dict(processor(text=[text], videos=[clip.frames], video_metadata=[clip.metadata()], return_tensors="pt"))
    timer = StreamTimer()
    source = FrameSource.from_frames(clip.frames, clip.fps, clip.indices, clip.total_frames)
    streamed = streamed_inputs(processor, [text], [source], chunk_frames=6, timer=timer)
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "video_grid_thw", "second_per_grid_ts"):
        assert (key in streamed) == (key in one_shot)
        if key in one_shot:
            assert torch.equal(streamed[key], one_shot[key]), key
    chunks = list(streamed["video_chunks"][0])
    assert [int(g[0, 0]) for _, g in chunks] == [3, 3, 2]
    assert torch.equal(torch.cat([p for p, _ in chunks]), one_shot["pixel_values_videos"])
    assert timer.preprocess > 0

    whole = ADAPTERS[family](model, processor, vision_chunk_tokens=10 ** 9)  # one vision call per video
    chunked = ADAPTERS[family](model, processor, vision_chunk_tokens=1)  # one slice per call
    for name in ADAPTER_METHODS:
        reference, ref_stats = whole.compress_inputs(dict(one_shot), METHODS[name]())
        fresh = streamed_inputs(processor, [text], [source], chunk_frames=4)
        for inputs, adapter in ((dict(one_shot), chunked), (fresh, whole), (fresh, chunked)):
            if "video_chunks" in inputs:  # a stream is read once
                inputs = streamed_inputs(processor, [text], [source], chunk_frames=4)
            ours, stats = adapter.compress_inputs(inputs, METHODS[name]())
            for key in ("input_ids", "attention_mask", "mm_token_type_ids", "position_ids"):
                assert torch.equal(ours[key], reference[key]), (name, key)
            for a, b in zip(encoder_rows(ours), encoder_rows(reference), strict=True):
                assert torch.equal(a, b), name
            assert stats[0].visual_tokens_after == ref_stats[0].visual_tokens_after
            assert stats[0].vision_seconds > 0
        with torch.no_grad():
            ids = {k: v for k, v in ours.items()}
            assert torch.equal(model(**ids).logits, model(**reference).logits), name


@pytest.mark.parametrize("heads,kv_heads,q_len,kv_len", [(4, 2, 5, 12), (6, 2, 7, 7), (3, 3, 1, 9), (8, 1, 4, 30)])
def test_prefix_causal_attention_equals_masked_attention(heads, kv_heads, q_len, kv_len):
    """The split (cached keys with the query heads of a KV head folded into one query, plus the
    piece's own causal square) is softmax attention with the bottom-right causal mask."""
    from freres_lmms.models.attention import prefix_causal_attention

    gen = torch.Generator().manual_seed(heads * 100 + kv_len)
    # the query as the model hands it: [B, q, H, d] transposed, so not contiguous
    query = torch.randn(2, q_len, heads, 16, generator=gen).transpose(1, 2)
    key, value = (torch.randn(2, kv_heads, kv_len, 16, generator=gen) for _ in range(2))
    visible = torch.ones(q_len, kv_len, dtype=torch.bool).tril(kv_len - q_len)
    groups = heads // kv_heads
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1), attn_mask=visible, scale=0.3)
    assert torch.allclose(prefix_causal_attention(query, key, value, 0.3), expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="cannot follow"):
        prefix_causal_attention(query, key[:, :, : q_len - 1], value[:, :, : q_len - 1])
    with pytest.raises(ValueError, match="cannot share"):
        prefix_causal_attention(query, torch.zeros(2, 5, kv_len, 16), torch.zeros(2, 5, kv_len, 16))


@pytest.mark.parametrize("family", ["qwen2vl", "qwen2_5vl", "qwen3vl"])
def test_chunked_prefill_and_greedy_decode_equal_generate(family, loaded, videos):
    """Pieces of 7 tokens (every piece boundary inside the video's rows), of 16, and one piece: the
    last position's logits are generate's first logits (fp32 rounding) and the greedy tokens agree."""
    from freres_lmms.data.video import load_video
    from freres_lmms.models import ADAPTERS
    from freres_lmms.models.prefill import chunked_prefill, greedy_decode

    model, processor = loaded[family]
    clip = load_video(videos[4]["video"], 8)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moved?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = dict(processor(text=[text], videos=[clip.frames], video_metadata=[clip.metadata()], return_tensors="pt"))
    kwargs, _ = ADAPTERS[family](model, processor).compress_inputs(inputs, METHODS["freres"]())
    reference = model.generate(**kwargs, max_new_tokens=5, do_sample=False, output_logits=True, return_dict_in_generate=True)
    for chunk in (7, 16, 10 ** 6):
        logits, cache = chunked_prefill(model, kwargs, chunk)
        assert cache.get_seq_length() == kwargs["input_ids"].shape[1]
        assert torch.allclose(logits, reference.logits[0], atol=1e-4, rtol=0), chunk
        tokens = greedy_decode(model, cache, logits, kwargs["position_ids"][:, :, -1:], 5)
        assert tokens[0].tolist() == reference.sequences[0, -5:].tolist()
    with pytest.raises(ValueError, match="one sample at a time"):
        chunked_prefill(model, {**kwargs, "input_ids": kwargs["input_ids"].repeat(2, 1)}, 8)


@pytest.mark.parametrize("family", ["qwen2vl", "qwen3vl"])
def test_wrapper_streams_frames_decoded_at_frame_size(family, checkpoints, videos, monkeypatch):
    """With frame_size the lmms-eval wrapper decodes at that size and, one video per sample, preprocesses
    stream_frames frames at a time: the same answers and token counts as the processor's one call
    (stream_frames=0), batch of 2 included; bad values are refused before any work."""
    from lmms_eval.api.instance import Instance
    from lmms_eval.models import get_model

    from freres_lmms.lmms.settings import SettingsError

    import freres_lmms.lmms.wrapper as wrapper

    calls = []
    monkeypatch.setattr(wrapper, "streamed_inputs", lambda *a, **k: calls.append(len(a[1])) or streamed(*a, **k))
    from freres_lmms.models.streaming import streamed_inputs as streamed

    docs = videos[:3]

    def request(doc_id):
        gen = {"max_new_tokens": 4, "temperature": 0, "do_sample": False, "until": []}
        args = ("Answer with the option's letter. What is in the video?", gen, lambda doc: [doc["video"]], doc_id, "probe", "test")
        return Instance(request_type="generate_until", arguments=args, idx=0, metadata={"task": "probe", "doc_id": doc_id, "repeats": 1})

    outputs = {}
    for stream in (0, 4):
        lm = get_model(f"uniform_{family}")(
            pretrained=str(checkpoints[family]), device="cpu", max_num_frames=8, frame_size=224, stream_frames=stream,
            batch_size=2, budget=0.5)
        lm.task_dict = {"probe": {"test": docs}}
        results = lm.generate_until([request(i) for i in range(len(docs))])
        outputs[stream] = [(r.text, r.token_counts.visual_tokens_after, r.token_counts.error) for r in results]
    assert outputs[0] == outputs[4]
    assert all(error is None and text for text, _, error in outputs[4])
    assert calls == [2, 1]  # the streamed path ran, for the batch of 2 and the last one
    model = get_model(f"uniform_{family}")
    with pytest.raises(SettingsError, match="multiples of"):
        model(pretrained=str(checkpoints[family]), device="cpu", frame_size=100)
    with pytest.raises(SettingsError, match="stream_frames must be 0 or a positive multiple of 2"):
        model(pretrained=str(checkpoints[family]), device="cpu", frame_size=224, stream_frames=3)
