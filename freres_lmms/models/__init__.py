"""One adapter per model family: sequence bookkeeping around the stock transformers models."""

from __future__ import annotations

from .base import CompressionStats, QwenVLAdapter
from .qwen2_5_vl import Qwen2_5VLAdapter
from .qwen2_vl import Qwen2VLAdapter
from .qwen3_vl import Qwen3VLAdapter

#: family id (as in model ids ``{method}_{family}``) -> adapter class
ADAPTERS: dict[str, type[QwenVLAdapter]] = {a.family: a for a in (Qwen2VLAdapter, Qwen2_5VLAdapter, Qwen3VLAdapter)}



def family_of(checkpoint: str) -> str:
    """The family id of a checkpoint directory or hub id, read from its config's ``model_type``."""
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(checkpoint).model_type
    for family, adapter in ADAPTERS.items():
        if adapter.model_type == model_type:
            return family
    raise ValueError(f"{checkpoint}: model_type {model_type!r} is none of {', '.join(a.model_type for a in ADAPTERS.values())}")


__all__ = ["ADAPTERS", "family_of", "CompressionStats", "QwenVLAdapter", "Qwen2VLAdapter", "Qwen2_5VLAdapter", "Qwen3VLAdapter"]
