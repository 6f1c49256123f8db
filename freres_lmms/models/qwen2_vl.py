"""Qwen2-VL adapter: the shared recipe, nothing family-specific."""

from __future__ import annotations

from transformers import Qwen2VLForConditionalGeneration

from .base import QwenVLAdapter


class Qwen2VLAdapter(QwenVLAdapter):
    family = "qwen2vl"
    model_type = "qwen2_vl"
    model_class = Qwen2VLForConditionalGeneration
