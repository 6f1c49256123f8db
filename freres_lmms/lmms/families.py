"""One wrapper class per model family; the method comes from model_args (``method=...``)."""

from __future__ import annotations

from .wrapper import FreresQwenVL


class FreresQwen2VL(FreresQwenVL):
    family = "qwen2vl"


class FreresQwen2_5VL(FreresQwenVL):
    family = "qwen2_5vl"


class FreresQwen3VL(FreresQwenVL):
    family = "qwen3vl"


FAMILY_CLASSES = {cls.family: cls for cls in (FreresQwen2VL, FreresQwen2_5VL, FreresQwen3VL)}
