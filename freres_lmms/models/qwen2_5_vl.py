"""Qwen2.5-VL adapter: temporal ids scale with ``second_per_grid_ts``, which ``compress_inputs``
forwards to ``get_rope_index``; the rest is the shared recipe."""

from __future__ import annotations

from transformers import Qwen2_5_VLForConditionalGeneration

from .base import QwenVLAdapter


class Qwen2_5VLAdapter(QwenVLAdapter):
    family = "qwen2_5vl"
    model_type = "qwen2_5_vl"
    model_class = Qwen2_5_VLForConditionalGeneration
