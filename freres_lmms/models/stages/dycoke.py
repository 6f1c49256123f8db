"""DyCoke's decode stage: dynamic visual-KV pruning inside the stock ``generate``.

The official code (``modeling_qwen2.py``, ``PrunableDynamicCache``) gathers the kept K/V for
layers >= L at decode steps. Here the full cache stays untouched and a registered attention
function masks the unselected visual keys for those layers instead: numerically the same as
gathering, and it handles batch > 1 with left padding. The function is switched on for the text
model only, for one ``generate`` call, by :func:`dycoke_attention`, which restores the previous
implementation on exit. The real attention is SDPA (also at prefill); the selection algorithm is
``core.dycoke.DecodeSelection``.

Decode steps are recognised by ``q_len == 1`` (the official ``position_ids.shape[1] == 1`` test
also fires at prefill on Qwen's 3-row positions). The state lives in this call and in each
batch row, so one sample's attention never leaks into the next one's first step.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from ...core.dycoke import (
    DecodeSelection,
    DyCokeMethod,
    decode_attention_row,
    prunable_visual,
)
from . import scoped_attention

ATTENTION = "freres_dycoke"
_ACTIVE: ContextVar[DecodeStep | None] = ContextVar("freres_dycoke_step", default=None)


class DecodeStep:
    """Ties one call's :class:`DecodeSelection` to the text model's layers."""

    def __init__(self, config, layer: int, selection: DecodeSelection):
        self.config = config  # the text config whose layers this step serves
        self.layer = layer
        self.selection = selection
        self.keep: torch.Tensor | None = None  # this step's prompt-key mask, None = attend to all
        self._mask: tuple | None = None  # (input mask, combined mask) shared by layers >= L

    def mask_for(self, module, query, key, attention_mask, scaling):
        layer = module.layer_idx
        if layer == self.layer - 1:
            self.selection.expand(query.shape[0])
            row = decode_attention_row(query, key, attention_mask, scaling if scaling is not None else module.scaling)
            self.keep = self.selection.step(row)
            self._mask = None
        if layer < self.layer or self.keep is None:
            return attention_mask
        if self._mask is None or self._mask[0] is not attention_mask:
            self._mask = (attention_mask, _restrict(attention_mask, self.keep, key.shape[-2]))
        return self._mask[1]


def _restrict(attention_mask, keep: torch.Tensor, kv_length: int) -> torch.Tensor:
    """``attention_mask`` with the unselected prompt keys masked out; keys after the prompt stay."""
    tail = torch.ones(keep.shape[0], kv_length - keep.shape[1], dtype=torch.bool, device=keep.device)
    allowed = torch.cat([keep, tail], dim=-1)[:, None, None, :]
    if attention_mask is None:
        return allowed
    if attention_mask.dtype == torch.bool:
        return attention_mask & allowed
    return attention_mask.masked_fill(~allowed, torch.finfo(attention_mask.dtype).min)


def dycoke_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """SDPA, with DyCoke's key restriction at decode steps of the active call."""
    step = _ACTIVE.get()
    if step is not None and query.shape[2] == 1 and module.config is step.config:
        attention_mask = step.mask_for(module, query, key, attention_mask, scaling)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


@contextmanager
def dycoke_attention(model, step: DecodeStep):
    """Run the text model with DyCoke's attention for the duration of the block (the stock model
    builds SDPA's mask for it: bool, or None)."""
    token = _ACTIVE.set(step)
    try:
        with scoped_attention(model.model.language_model, ATTENTION, dycoke_attention_forward, sdpa_mask):
            yield step
    finally:
        _ACTIVE.reset(token)


def generate(adapter, method: DyCokeMethod, kwargs: dict, settings: dict, stats: list) -> torch.Tensor:
    """Stock ``generate`` with DyCoke's decode-time KV pruning; returns ``generate``'s output.

    The visual tokens are the prompt's video placeholders (post-TTM). ``method.last_counts``
    gains ``"decode"``: steps, and per row the steps that selected, ran with the full visual KV
    or reused the previous selection, the prunable span and the visual keys kept.
    ``stats[b].kv_visual_tokens`` is the visual KV stored: all of the prompt's (DyCoke keeps the
    full cache).
    """
    model = adapter.model
    depth = model.config.get_text_config().num_hidden_layers
    if method.layer > depth:
        raise ValueError(f"dycoke: layer {method.layer} is beyond the model's {depth} layers, pruning would never run")
    if settings.get("num_beams", 1) > 1:
        raise ValueError("dycoke: beam search is not supported (beams reorder the per-row decode state)")
    visual = kwargs["input_ids"] == model.config.video_token_id
    selection = DecodeSelection(prunable_visual(visual, method.exclude_last_visual), method.prune_ratio,
                                method.similarity_threshold, method.reselect)
    step = DecodeStep(model.config.get_text_config(), method.layer, selection)
    with dycoke_attention(model, step):
        out = model.generate(**kwargs, **settings)
    method.last_counts = {**method.last_counts, "decode": selection.counts}
    for row, stat in zip(visual, stats):
        stat.kv_visual_tokens = float(row.sum())
    return out
