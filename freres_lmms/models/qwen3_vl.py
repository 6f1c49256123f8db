"""Qwen3-VL adapter: DeepStack features follow the kept/emitted tokens.

The processor interleaves a timestamp between frames; those text tokens stay, and each emitted
token joins its slot's frame span. Whatever a method drops or synthesizes, it does the same to
every DeepStack layer, so ``visual_pos_masks`` (derived from ``input_ids`` by the stock forward)
and the DeepStack rows stay aligned.
"""

from __future__ import annotations

import torch
from transformers import Qwen3VLForConditionalGeneration

from .base import QwenVLAdapter


class Qwen3VLAdapter(QwenVLAdapter):
    family = "qwen3vl"
    model_type = "qwen3_vl"
    model_class = Qwen3VLForConditionalGeneration

    def split_deepstack(self, encoded, video: int) -> list[torch.Tensor]:
        return [layer[video] for layer in encoded.deepstack_features]

    def pack_encoder_output(self, encoded, features, deepstack):
        return type(encoded)(pooler_output=tuple(features), deepstack_features=[tuple(layer) for layer in deepstack])
