"""The adapter recipe against plain transformers and against hand-built references."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from freres_lmms.core import CompressedVideo, FullMethod, Method, SelectionMethod, UniformMethod, VideoTokens
from freres_lmms.data.video import load_video
from freres_lmms.families import FAMILIES
from freres_lmms.models import ADAPTERS

QUESTION = "In which direction does the object move?"


def prepare(processor, paths, frames=8):
    """Processor outputs for one prompt per video; ``frames`` is an int or one per video."""
    counts = frames if isinstance(frames, (list, tuple)) else [frames] * len(paths)
    clips = [load_video(path, count) for path, count in zip(paths, counts)]
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return dict(processor(text=[text] * len(paths), videos=[c.frames for c in clips],
                          video_metadata=[c.metadata() for c in clips], padding=True, return_tensors="pt"))


def assert_inputs_and_logits_equal_full(model, adapter, inputs, method) -> None:
    """``method`` rebuilds exactly the inputs of ``full`` and the model gives the same logits."""
    full, _ = adapter.compress_inputs(inputs, FullMethod())
    ours, _ = adapter.compress_inputs(inputs, method)
    for key in ("input_ids", "attention_mask", "position_ids", "mm_token_type_ids"):
        assert torch.equal(ours[key], full[key])
    with torch.no_grad():
        assert torch.equal(model(**ours).logits, model(**full).logits)


@dataclass
class RandomSubset(SelectionMethod):
    """Keeps a seeded random ``fraction`` of the tokens (test-only selection method)."""

    name = "random_subset"
    fraction: float = 0.4
    seed: int = 0

    def select(self, video: VideoTokens) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + video.num_tokens)
        n = max(1, int(video.num_tokens * self.fraction))
        return torch.randperm(video.num_tokens, generator=g)[:n]


@pytest.mark.parametrize("family", FAMILIES)
def test_full_budget_equals_plain_generate(family, loaded, videos):
    model, processor = loaded[family]
    inputs = prepare(processor, [videos[3]["video"]])
    plain = model.generate(**inputs, max_new_tokens=8, do_sample=False, output_logits=True, return_dict_in_generate=True)
    kwargs, stats = ADAPTERS[family](model, processor).compress_inputs(inputs, FullMethod())
    ours = model.generate(**kwargs, max_new_tokens=8, do_sample=False, output_logits=True, return_dict_in_generate=True)
    start = inputs["input_ids"].shape[1]
    assert torch.equal(ours.sequences[:, start:], plain.sequences[:, start:])
    for a, b in zip(ours.logits, plain.logits):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert torch.equal(kwargs["input_ids"], inputs["input_ids"])
    assert stats[0].visual_tokens_before == stats[0].visual_tokens_after == int((inputs["input_ids"] == model.config.video_token_id).sum())


def reference_logits(model, inputs, keep: torch.Tensor) -> torch.Tensor:
    """Logits of a prompt whose video keeps only grid tokens ``keep``, built by hand."""
    base = model.model
    encoded = base.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"], return_dict=True)
    extra = {k: inputs[k] for k in ("second_per_grid_ts",) if k in inputs}
    mrope, _ = base.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                   video_grid_thw=inputs["video_grid_thw"], **extra)
    ids = inputs["input_ids"][0]
    video_seq = (ids == model.config.video_token_id).nonzero().flatten()
    keep_seq = torch.ones_like(ids, dtype=torch.bool)
    keep_seq[video_seq] = False
    keep_seq[video_seq[keep]] = True
    new_ids = ids[keep_seq]
    embeds = base.get_input_embeddings()(new_ids)
    is_video = new_ids == model.config.video_token_id
    embeds[is_video] = encoded.pooler_output[0][keep]
    positions = torch.cat([torch.arange(new_ids.numel())[None], mrope[:, 0, keep_seq]])[:, None, :]
    extra_lm = {}
    if hasattr(encoded, "deepstack_features") and encoded.deepstack_features:
        extra_lm = {"visual_pos_masks": is_video[None],
                    "deepstack_visual_embeds": [layer[0][keep] for layer in encoded.deepstack_features]}
    hidden = base.language_model(inputs_embeds=embeds[None], position_ids=positions, **extra_lm).last_hidden_state
    return model.lm_head(hidden)


@pytest.mark.parametrize("family", FAMILIES)
def test_selection_matches_hand_built_reference(family, loaded, videos):
    model, processor = loaded[family]
    inputs = prepare(processor, [videos[0]["video"]])
    method = RandomSubset(0.3)
    kwargs, stats = ADAPTERS[family](model, processor).compress_inputs(inputs, method)
    total = stats[0].visual_tokens_before
    keep = torch.unique(method.select(VideoTokens(torch.zeros(total, 1, 1, 1), torch.zeros(3, total, 1, 1, dtype=torch.long))))
    assert stats[0].visual_tokens_after == keep.numel() == int(total * 0.3)
    with torch.no_grad():
        ours = model(**kwargs).logits
        ref = reference_logits(model, inputs, keep)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    # rows 1-3 are the gathered originals, row 0 is contiguous
    assert torch.equal(kwargs["position_ids"][0, 0], torch.arange(kwargs["input_ids"].shape[1]))


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_of_two_equals_two_single_runs(family, loaded, videos):
    """Different keep counts per sample: 8 frames vs 6 frames under the same stride."""
    model, processor = loaded[family]
    adapter = ADAPTERS[family](model, processor)
    method = UniformMethod(stride=2)
    paths = [videos[1]["video"], videos[4]["video"]]
    singles = []
    for path, frames in zip(paths, (8, 4)):
        kwargs, _ = adapter.compress_inputs(prepare(processor, [path], frames), method)
        out = model.generate(**kwargs, max_new_tokens=6, do_sample=False, output_logits=True, return_dict_in_generate=True)
        singles.append((out.sequences[0, kwargs["input_ids"].shape[1]:], out.logits[0][0], kwargs["input_ids"].shape[1]))
    kwargs, stats = adapter.compress_inputs(prepare(processor, paths, (8, 4)), method)
    assert stats[0].visual_tokens_after != stats[1].visual_tokens_after
    out = model.generate(**kwargs, max_new_tokens=6, do_sample=False, output_logits=True, return_dict_in_generate=True)
    length = kwargs["input_ids"].shape[1]
    for row, (tokens, first_logits, single_length) in enumerate(singles):
        assert int(kwargs["attention_mask"][row].sum()) == single_length
        torch.testing.assert_close(out.logits[0][row], first_logits, rtol=1e-4, atol=1e-4)
        got = out.sequences[row, length:]
        assert torch.equal(got[: tokens.numel()], tokens)


@dataclass
class MeanOfSlices(Method):
    """Synthesis test method: one token per temporal slice, the slice mean, at its region position."""

    name = "mean_of_slices"

    def compress(self, video: VideoTokens) -> CompressedVideo:
        from freres_lmms.core import region_position

        t, h, w = video.grid
        regions = torch.zeros(t, t * h * w, dtype=torch.bool)
        regions.view(t, t, h * w)[torch.arange(t), torch.arange(t)] = True
        positions = region_position(video.positions.reshape(3, -1), regions)
        slots = torch.arange(t) * h * w + (h // 2) * w + w // 2
        mean = video.features.mean(dim=(1, 2))
        return CompressedVideo(mean, positions, slots, [d.mean(dim=(1, 2)) for d in video.deepstack])


@pytest.mark.parametrize("family", FAMILIES)
def test_synthesized_tokens_take_method_positions(family, loaded, videos):
    model, processor = loaded[family]
    inputs = prepare(processor, [videos[2]["video"]])
    kwargs, stats = ADAPTERS[family](model, processor).compress_inputs(inputs, MeanOfSlices())
    t = int(inputs["video_grid_thw"][0, 0])
    assert stats[0].visual_tokens_after == t
    is_video = kwargs["input_ids"][0] == model.config.video_token_id
    assert int(is_video.sum()) == t
    video_pos = kwargs["position_ids"][1:, 0, is_video]
    assert torch.equal(video_pos[1], video_pos[1].sort().values)  # one token per slice, in order
    # the temporal row of each slice token is that slice's own temporal id in the full prompt
    base = model.model
    extra = {k: inputs[k] for k in ("second_per_grid_ts",) if k in inputs}
    mrope, _ = base.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                   video_grid_thw=inputs["video_grid_thw"], **extra)
    original_t = mrope[0, 0, inputs["input_ids"][0] == model.config.video_token_id].unique()
    assert torch.equal(video_pos[0], original_t)
    out = model.generate(**kwargs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > kwargs["input_ids"].shape[1]


def test_adapter_refuses_wrong_family(loaded):
    model, processor = loaded["qwen2vl"]
    with pytest.raises(ValueError, match="qwen3_vl"):
        ADAPTERS["qwen3vl"](model, processor)


@dataclass
class KeepSlices(SelectionMethod):
    """Keeps whole temporal slices (test-only selection method)."""

    name = "keep_slices"
    slices: tuple = (0,)

    def select(self, video: VideoTokens) -> torch.Tensor:
        t, h, w = video.grid
        return (torch.tensor(self.slices)[:, None] * (h * w) + torch.arange(h * w)[None, :]).flatten()


@pytest.mark.parametrize("method, kept", [(UniformMethod(stride=2), [0, 2]), (KeepSlices(slices=(1, 2)), [1, 2]),
                                          (KeepSlices(slices=(3,)), [3])])
def test_qwen3_prompt_of_kept_slices_equals_the_processors_prompt_for_them(loaded, videos, method, kept):
    """Dropping whole slices drops their timestamps too: input_ids, positions and logits equal those of
    the kept frames alone through the processor and the full path (``keep_dropped_timestamps`` keeps them)."""
    from freres_lmms.data.video import LoadedVideo
    from freres_lmms.lmms.wrapper import prompt_text

    model, processor = loaded["qwen3vl"]
    clip = load_video(videos[3]["video"], 8)  # 8 frames: 4 slices of two
    frames = [f for s in kept for f in (2 * s, 2 * s + 1)]
    alone = LoadedVideo(clip.frames[frames], clip.fps, [clip.indices[f] for f in frames], clip.total_frames)
    text = prompt_text(processor, QUESTION, 1)
    inputs = [dict(processor(text=[text], videos=[c.frames], video_metadata=[c.metadata()], return_tensors="pt"))
              for c in (clip, alone)]
    adapter = ADAPTERS["qwen3vl"](model, processor)
    ours, stats = adapter.compress_inputs(inputs[0], method)
    reference, _ = adapter.compress_inputs(inputs[1], FullMethod())
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "position_ids"):
        assert torch.equal(ours[key], reference[key]), key
    with torch.no_grad():
        torch.testing.assert_close(model(**ours).logits, model(**reference).logits, rtol=1e-4, atol=1e-4)
    old, _ = ADAPTERS["qwen3vl"](model, processor, keep_dropped_timestamps=True).compress_inputs(inputs[0], method)
    seconds = processor.tokenizer.convert_tokens_to_ids("Ġseconds")
    assert int((old["input_ids"] == seconds).sum()) == 4 and int((ours["input_ids"] == seconds).sum()) == len(kept)
    assert stats[0].visual_tokens_after == old["mm_token_type_ids"].eq(2).sum() == ours["mm_token_type_ids"].eq(2).sum()


def test_qwen3_batch_with_different_dropped_slices_equals_single_rows(loaded, videos):
    model, processor = loaded["qwen3vl"]
    adapter = ADAPTERS["qwen3vl"](model, processor)
    batch = prepare(processor, [videos[3]["video"], videos[5]["video"]], frames=[8, 6])
    ours, _ = adapter.compress_inputs(batch, UniformMethod(stride=2))
    for row, (path, frames) in enumerate([(videos[3]["video"], 8), (videos[5]["video"], 6)]):
        single, _ = adapter.compress_inputs(prepare(processor, [path], frames), UniformMethod(stride=2))
        n = single["input_ids"].shape[1]
        assert torch.equal(ours["input_ids"][row, -n:], single["input_ids"][0])
        assert torch.equal(ours["position_ids"][1:, row, -n:], single["position_ids"][1:, 0])
