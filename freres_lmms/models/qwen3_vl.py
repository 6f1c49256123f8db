"""Qwen3-VL adapter: DeepStack features follow the kept/emitted tokens; timestamps follow the slices.

Whatever a method drops or synthesizes, it does the same to every DeepStack layer, so
``visual_pos_masks`` (derived from ``input_ids`` by the stock forward) and the DeepStack rows stay
aligned. The processor writes each slice as ``<t seconds><|vision_start|>tokens<|vision_end|>``
inside the video's own ``<|vision_start|> ... <|vision_end|>``; each emitted token joins its slot's
slice. A slice the method leaves empty loses its timestamp and markers too, and everything after
moves back by the positions they spanned, so the prompt equals, token for token and position for
position, the one the processor builds for the kept slices alone (what Qwen3-VL was trained on).
``keep_dropped_timestamps=True`` (a model_arg) keeps them, as before.
"""

from __future__ import annotations

import torch
from transformers import Qwen3VLForConditionalGeneration

from ..core import CompressedVideo
from .base import QwenVLAdapter, VideoSpan


class Qwen3VLAdapter(QwenVLAdapter):
    family = "qwen3vl"
    model_type = "qwen3_vl"
    model_class = Qwen3VLForConditionalGeneration

    def split_deepstack(self, encoded, video: int) -> list[torch.Tensor]:
        return [layer[video] for layer in encoded.deepstack_features]

    def pack_encoder_output(self, output_class, features, deepstack):
        return output_class(pooler_output=tuple(features), deepstack_features=[tuple(layer) for layer in deepstack])

    def empty_slice_text(self, input_ids: torch.Tensor, positions: torch.Tensor, span: VideoSpan,
                         out: CompressedVideo) -> tuple[torch.Tensor, torch.Tensor] | None:
        t, h, w = span.grid
        dropped = torch.bincount(out.slots // (h * w), minlength=t) == 0  # [T] slices with no token
        if not bool(dropped.any()):
            return None
        seq = span.seq.view(t, h * w)
        start_id = self.model.config.vision_start_token_id
        end_id = self.model.config.vision_end_token_id
        opens = (input_ids[: int(seq[0, 0])] == start_id).nonzero(as_tuple=True)[0]
        if (len(opens) < 2 or not bool((input_ids[seq[:, 0] - 1] == start_id).all())
                or not bool((input_ids[seq[:, -1] + 1] == end_id).all())):
            raise ValueError("Qwen3-VL video text is not <t seconds><|vision_start|>tokens<|vision_end|> per slice; "
                             "pass keep_dropped_timestamps=true for this processor")
        # slice s spans from the token after the previous slice's <|vision_end|> (slice 0: after the
        # video's opening <|vision_start|>) to its own <|vision_end|>, both ends included
        starts = torch.cat([opens[-2:-1] + 1, seq[:-1, -1] + 2])
        ends = seq[:, -1] + 1
        starts, ends = starts[dropped], ends[dropped]
        length = input_ids.numel()
        edges = torch.zeros(length + 1, dtype=torch.long, device=input_ids.device)
        edges.index_add_(0, starts, torch.ones_like(starts))
        edges.index_add_(0, ends + 1, -torch.ones_like(ends))
        remove = edges.cumsum(0)[:length] > 0
        shift = torch.zeros(length, dtype=positions.dtype, device=input_ids.device)
        shift.index_add_(0, ends + 1, positions[ends + 1] - positions[starts])  # what each region spanned
        return remove, shift
