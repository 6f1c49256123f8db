"""AdaReTaKe's LLM stage: chunked prefill with per-layer top-k KV compression, on the stock model.

Per sample (the official code runs batch 1; rows run one at a time and are left-padded back
together), the prompt is cut into the text before the video, video chunks of
``method.slices_per_chunk`` temporal slices, and the guide prompt (everything after the video).

1. The text before the video is prefilled into an :class:`AdaReTaKeCache`.
2. Each chunk that must shrink is forwarded as ``[chunk ; guide prompt]``: the chunk at its stock
   position ids, the guide shifted to follow the chunk. The attention function registered here
   computes every layer's prompt-to-chunk scores (``core.adaretake.chunk_scores``); then each
   layer keeps its top-k video keys of the chunk (``AdaReTaKeMethod.compress_chunk``) and drops
   the prompt's keys. A chunk kept whole is forwarded alone.
3. The guide prompt is prefilled at its stock positions, then greedy decoding continues each
   position row from the prompt's last id (what stock ``generate`` does).

Layers hold different cache lengths, so the attention function builds its own causal mask aligned
bottom-right (every cached entry visible) and delegates to transformers' SDPA. It is switched on
for the language model only, inside :func:`adaretake_attention`, and switched back in ``finally``.
Qwen3-VL: timestamp text between frames stays in the cache uncompressed; DeepStack rows go with
their chunk. Only video prompts are supported (no images), one video per sample.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import DynamicCache
from transformers.generation import (
    GenerateDecoderOnlyOutput,
    RepetitionPenaltyLogitsProcessor,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from ...core.adaretake import AdaReTaKeMethod, chunk_scores
from ...core.base import CompressionError
from ..attention import prefix_causal_attention
from ..base import _clock
from . import scoped_attention

ATTENTION = "freres_adaretake"
_NO_PLANNING = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
SETTINGS = {"max_new_tokens", "do_sample", "num_beams", "pad_token_id", "eos_token_id", "temperature", "top_p", "top_k",
            "repetition_penalty", "output_logits", "return_dict_in_generate", "use_cache"}


class AdaReTaKeCache(DynamicCache):
    """A ``DynamicCache`` whose layers may hold different lengths; records each layer's peak length."""

    def __init__(self) -> None:
        super().__init__()
        self.peak: dict[int, int] = {}

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        keys, values = super().update(key_states, value_states, layer_idx, *args, **kwargs)
        self.peak[layer_idx] = max(self.peak.get(layer_idx, 0), int(keys.shape[-2]))
        return keys, values

    def lengths(self) -> list[int]:
        return [layer.get_seq_length() for layer in self.layers]

    def keep_span(self, layer_idx: int, start: int, keep: torch.Tensor) -> None:
        """Layer ``layer_idx`` keeps its entries before ``start`` and ``start + keep``; the rest goes."""
        layer = self.layers[layer_idx]
        index = keep.to(layer.keys.device) + start
        layer.keys = torch.cat([layer.keys[..., :start, :], layer.keys.index_select(-2, index)], dim=-2)
        layer.values = torch.cat([layer.values[..., :start, :], layer.values.index_select(-2, index)], dim=-2)


@dataclass
class _Scoring:
    """What the attention function scores during one ``[chunk ; prompt]`` forward."""

    prompt: int  # the last ``prompt`` queries are the guide prompt
    video: torch.Tensor  # input indices of the chunk's video tokens
    scores: dict[int, torch.Tensor] = field(default_factory=dict)


_ACTIVE: list[_Scoring | None] = [None]  # the scoring request of the forward in flight, if any


def _attention(module, query, key, value, attention_mask, **kwargs):
    """Bottom-right causal attention (``models.attention``); scores the chunk when a scoring request is active."""
    q_len, kv_len = query.shape[2], key.shape[2]
    scoring = _ACTIVE[0]
    if scoring is not None:
        past = kv_len - q_len
        scoring.scores[module.layer_idx] = chunk_scores(
            query[0, :, q_len - scoring.prompt:], key[0, :, past + scoring.video], kwargs.get("scaling")
        )
    if q_len == kv_len:  # SDPA's own causal mask
        return sdpa_attention_forward(module, query, key, value, None, **kwargs)
    # layers hold different cache lengths, so every decode step and chunk meets shapes never seen:
    # cuDNN attention would build an execution plan for each (1.4 s of CPU over a 16-token decode on
    # the H200, issue 15); flash and the memory-efficient kernel need none
    if q_len == 1:  # one query: every cached key visible
        with sdpa_kernel(_NO_PLANNING):
            return sdpa_attention_forward(module, query, key, value, None, **kwargs)
    # a chunk after the cache: bottom-right causal, exact without a mask (models.attention)
    out = prefix_causal_attention(query, key, value, kwargs.get("scaling"), "flash")
    return out.transpose(1, 2).contiguous(), None


@contextmanager
def adaretake_attention(language_model):
    """Switch ``language_model`` (only) to the AdaReTaKe attention function for the block. The stock
    model builds no mask for it: ``_attention`` makes its own, per layer's cache length."""
    try:
        with scoped_attention(language_model, ATTENTION, _attention):
            yield
    finally:
        _ACTIVE[0] = None


def _slice_starts(seq: torch.Tensor, hw: torch.Tensor) -> torch.Tensor:
    """Which video tokens (sequence indices ``seq``, M-RoPE ``(h, w)`` ids ``hw [2, V]``) open a
    temporal slice: the first of a run of video tokens (Qwen3-VL puts a timestamp between frames),
    or one at its run's top-left ``(h, w)`` (Qwen2/2.5-VL slices share their ``(h, w)`` ids)."""
    run_start = torch.ones_like(seq, dtype=torch.bool)
    run_start[1:] = seq[1:] != seq[:-1] + 1
    run = torch.cumsum(run_start.long(), 0) - 1
    return run_start | (hw == hw[:, run_start][:, run]).all(0)


@dataclass
class _Row:
    """One sample's valid tokens and what the prefill needs of them."""

    embed: torch.nn.Module  # the LLM's input embeddings
    positions: torch.Tensor  # [4, n]
    ids: torch.Tensor  # [n]
    video: torch.Tensor  # sequence indices of the video tokens (sorted)
    features: torch.Tensor  # [V, D]
    deepstack: list[torch.Tensor]  # [V, D] per DeepStack layer

    def embeds(self, lo: int, hi: int) -> torch.Tensor:
        """Input embeddings of tokens ``[lo, hi)``, the video's features at its tokens: built per
        piece, so no copy of the whole sequence's embeddings is held (8.5 GB at 1800 frames)."""
        out = self.embed(self.ids[lo:hi])
        first, last = torch.searchsorted(self.video, torch.tensor([lo, hi], device=self.video.device)).tolist()
        if last > first:
            out[self.video[first:last] - lo] = self.features[first:last].to(out.dtype)
        return out


class _Prefill:
    """Runs one row's chunked prefill and decoding against one cache."""

    def __init__(self, adapter, method: AdaReTaKeMethod, row: _Row):
        self.model = adapter.model
        self.lm = adapter.model.model.language_model
        self.method, self.row = method, row
        self.cache = AdaReTaKeCache()
        self.layers = self.lm.config.num_hidden_layers

    def forward(self, embeds, positions, visual: torch.Tensor | None = None, deepstack=None) -> torch.Tensor:
        extra = {}
        if deepstack:  # Qwen3-VL: DeepStack rows added at the visual positions of this input
            extra = {"visual_pos_masks": visual[None], "deepstack_visual_embeds": deepstack}
        out = self.lm(inputs_embeds=embeds[None], position_ids=positions[:, None], past_key_values=self.cache,
                      use_cache=True, **extra)
        return out.last_hidden_state[0]

    def span(self, lo: int, hi: int) -> torch.Tensor:
        """Prefill the text ``[lo, hi)`` of the row as is."""
        return self.forward(self.row.embeds(lo, hi), self.row.positions[:, lo:hi])

    def prefill(self) -> tuple[torch.Tensor, dict]:
        """Prefill the whole row; returns the last position's hidden state and the counts."""
        row, method = self.row, self.method
        n = row.ids.numel()
        if row.video.numel() == 0:
            return self.span(0, n)[-1], {"per_chunk": torch.zeros(0, self.layers, dtype=torch.long), "guide": 0}
        starts = _slice_starts(row.video, row.positions[2:, row.video])
        slices = int(starts.sum())
        per_slice = row.video.numel() // slices
        if per_slice * slices != row.video.numel() or not torch.equal(
                starts.nonzero().squeeze(1).cpu(), torch.arange(slices) * per_slice):
            raise CompressionError("adaretake: cannot read equal temporal slices from the video's position ids")
        plan = method.plan(row.features.reshape(slices, per_slice, -1), text_tokens=n - row.video.numel())
        first, last = int(row.video[0]), int(row.video[-1])
        guide = (last + 1, n) if method.max_guide_length is None else (max(last + 1, n - method.max_guide_length), n)
        if first > 0:
            self.span(0, first)
        counts, lo = [], first
        for c in range(plan.num_chunks):
            v_lo, v_hi = int(plan.bounds[c]) * per_slice, int(plan.bounds[c + 1]) * per_slice
            hi = int(row.video[v_hi - 1]) + 1
            counts.append(self.chunk(c, plan, lo, hi, (v_lo, v_hi), guide))
            lo = hi
        hidden = self.span(last + 1, n)[-1]
        per_chunk = torch.stack(counts)  # [C, L]
        return hidden, {"plan": plan, "per_chunk": per_chunk, "guide": guide[1] - guide[0]}

    def chunk(self, c: int, plan, lo: int, hi: int, rows: tuple[int, int], guide: tuple[int, int]) -> torch.Tensor:
        """Forward the chunk ``[lo, hi)`` (plus the guide prompt when it must shrink), keep top-k.

        ``rows``: the chunk's video tokens as a range of the video's features (and DeepStack rows).
        """
        row = self.row
        video_seq = row.video[rows[0]:rows[1]]
        is_video = torch.zeros(hi - lo, dtype=torch.bool, device=row.ids.device)
        is_video[video_seq - lo] = True
        deepstack = [d[rows[0]:rows[1]] for d in row.deepstack]
        length = video_seq.numel()
        if not plan.compresses(c):
            self.forward(row.embeds(lo, hi), row.positions[:, lo:hi], is_video, deepstack=deepstack)
            return torch.full((self.layers,), length, dtype=torch.long)
        g_lo, g_hi = guide
        prompt = g_hi - g_lo
        chunk_pos = row.positions[:, lo:hi]
        guide_pos = row.positions[:, g_lo:g_hi]
        # text positions are (p, p, p): the guide starts one past the chunk's largest M-RoPE id
        shifted = guide_pos - guide_pos[:, :1] + chunk_pos[1:].max() + 1
        shifted[0] = guide_pos[0] - guide_pos[0, 0] + chunk_pos[0, -1] + 1  # the text row continues the chunk
        before = self.cache.lengths() or [0] * self.layers
        _ACTIVE[0] = scoring = _Scoring(prompt, (video_seq - lo).to(row.ids.device))
        try:
            self.forward(torch.cat([row.embeds(lo, hi), row.embeds(g_lo, g_hi)]), torch.cat([chunk_pos, shifted], 1),
                         torch.cat([is_video, is_video.new_zeros(prompt)]), deepstack=deepstack)
        finally:
            _ACTIVE[0] = None
        scores = torch.stack([scoring.scores[layer] for layer in range(self.layers)])  # [L, Lc]
        counts, keep = self.method.compress_chunk(scores, plan, c)
        text = (~is_video).nonzero().squeeze(1)
        for layer, kept in enumerate(keep):
            index = torch.cat([text, (video_seq - lo).to(text.device)[kept.to(text.device)]]).sort().values
            self.cache.keep_span(layer, before[layer], index)
        return counts


def _decode_settings(model, settings: dict) -> dict:
    unknown = set(settings) - SETTINGS
    if unknown:
        raise CompressionError(f"adaretake: unsupported generation settings {sorted(unknown)}")
    config = model.generation_config

    def get(key):  # a setting given here wins over the model's generation_config, as in generate
        return settings[key] if settings.get(key) is not None else getattr(config, key, None)

    if get("do_sample"):
        raise CompressionError("adaretake: only greedy decoding is supported (do_sample=False)")
    if (get("num_beams") or 1) > 1:
        raise CompressionError("adaretake: beam search is not supported (num_beams=1)")
    if get("max_new_tokens") is None:
        raise CompressionError("adaretake: set max_new_tokens")
    eos = get("eos_token_id")
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    pad = get("pad_token_id")
    pad = pad if pad is not None else (eos[0] if eos else 0)
    return {"max_new_tokens": int(get("max_new_tokens")), "eos": eos, "pad": pad,
            "penalty": get("repetition_penalty") or 1.0, "logits": bool(settings.get("output_logits")),
            "dict": bool(settings.get("return_dict_in_generate"))}


def _rows(adapter, kwargs: dict) -> list[_Row]:
    model = adapter.model
    ids = kwargs["input_ids"]
    mask = kwargs.get("attention_mask")
    mask = torch.ones_like(ids) if mask is None else mask
    positions = kwargs.get("position_ids")
    if positions is None:  # a prompt without video: compress_inputs passes it through unchanged
        positions = (mask.long().cumsum(-1) - 1).clamp_min(0)[None].expand(4, -1, -1)
    if (ids == model.config.image_token_id).any():
        raise CompressionError("adaretake: image inputs are not supported, only video")
    encoded = (kwargs.get("mm_encoder_outputs") or {}).get("video")
    videos = list(encoded.pooler_output) if encoded is not None else []
    deep = [list(layer) for layer in (getattr(encoded, "deepstack_features", None) or [])]
    embed = model.model.get_input_embeddings()
    rows, index = [], 0
    for b in range(ids.shape[0]):
        valid = mask[b].bool()
        row_ids = ids[b, valid]
        video = (row_ids == adapter.video_token_id).nonzero().squeeze(1)
        features, deepstack = embed.weight.new_zeros(0, embed.weight.shape[-1]), []
        if video.numel():
            if index >= len(videos) or videos[index].shape[0] != video.numel():
                raise CompressionError("adaretake: one video per sample is supported; the video features do not match")
            features = videos[index]
            deepstack = [layer[index] for layer in deep]
            index += 1
        rows.append(_Row(embed, positions[:, b, valid], row_ids, video, features, deepstack))
    if index != len(videos):
        raise CompressionError("adaretake: one video per sample is supported; some video features have no sample")
    return rows


@torch.no_grad()
def generate(adapter, method: AdaReTaKeMethod, kwargs: dict, settings: dict, stats):
    """Greedy generation with AdaReTaKe's chunked, compressed prefill; ``generate``'s sequences.

    Fills ``stats[row].kv_visual_tokens`` (stored visual KV entries, mean over layers) and
    ``method.last_counts`` (of the last row): ``per_chunk [C, L]`` kept counts, ``per_layer [L]``,
    ``total`` (mean over layers), ``cache_lengths`` and ``peak`` (per-layer cache length after and
    at most during prefill), ``text`` (text tokens in the cache), ``guide`` (prompt tokens appended
    to each compressed chunk), ``plan`` (the ``ChunkPlan``), and ``prefill_seconds`` /
    ``decode_seconds`` (GPU-synchronized; the first token is part of the decode).
    """
    model = adapter.model
    options = _decode_settings(model, settings)
    input_ids = kwargs["input_ids"]
    outputs, all_logits = [], []
    with adaretake_attention(model.model.language_model):
        for b, row in enumerate(_rows(adapter, kwargs)):
            run = _Prefill(adapter, method, row)
            device = row.ids.device
            started = _clock(device)
            hidden, counts = run.prefill()
            prefilled = _clock(device)
            per_chunk = counts["per_chunk"]
            per_layer = per_chunk.sum(0) if per_chunk.numel() else torch.zeros(run.layers, dtype=torch.long)
            method.last_counts = {**counts, "per_layer": per_layer, "total": float(per_layer.double().mean()),
                                  "cache_lengths": run.cache.lengths(), "peak": [run.cache.peak[i] for i in range(run.layers)],
                                  "text": row.ids.numel() - row.video.numel(), "prefill_seconds": prefilled - started}
            stats[b].kv_visual_tokens = float(per_layer.double().mean())
            tokens, logits = _decode(run, hidden, options)
            method.last_counts["decode_seconds"] = _clock(device) - prefilled
            outputs.append(tokens)
            all_logits.append(logits)
    steps = max(t.numel() for t in outputs)
    sequences = torch.full((input_ids.shape[0], input_ids.shape[1] + steps), options["pad"], dtype=input_ids.dtype,
                           device=input_ids.device)
    sequences[:, : input_ids.shape[1]] = input_ids
    for b, tokens in enumerate(outputs):
        sequences[b, input_ids.shape[1]: input_ids.shape[1] + tokens.numel()] = tokens
    if not options["dict"]:
        return sequences
    logits = None
    if options["logits"]:  # rows that stopped early get zero logits for the remaining steps, like padding
        logits = tuple(torch.stack([row[s] if s < len(row) else torch.zeros_like(row[0]) for row in all_logits])
                       for s in range(steps))
    return GenerateDecoderOnlyOutput(sequences=sequences, logits=logits)


def _decode(run: _Prefill, hidden: torch.Tensor, options: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Greedy decoding from the prefill's last hidden state; positions continue each row by one per step."""
    model, row = run.model, run.row
    embed = model.model.get_input_embeddings()
    penalty = RepetitionPenaltyLogitsProcessor(options["penalty"]) if options["penalty"] != 1.0 else None
    last = row.positions[:, -1:]
    history = row.ids[None]
    tokens, logits = [], []
    for step in range(options["max_new_tokens"]):
        raw = model.lm_head(hidden[None]).float()  # [1, V], like generate's fp32 logits
        logits.append(raw[0])
        scores = penalty(history, raw.clone()) if penalty is not None else raw
        token = scores.argmax(-1)
        tokens.append(token)
        history = torch.cat([history, token[None]], 1)
        if int(token) in options["eos"] or step + 1 == options["max_new_tokens"]:
            break
        hidden = run.forward(embed(token), last + 1 + step)[-1]
    return torch.cat(tokens), logits
