"""One adapter per model family: sequence bookkeeping around the stock transformers models."""

from __future__ import annotations

from .base import CompressionStats, QwenVLAdapter
from .qwen2_5_vl import Qwen2_5VLAdapter
from .qwen2_vl import Qwen2VLAdapter
from .qwen3_vl import Qwen3VLAdapter

#: family id (as in model ids ``{method}_{family}``) -> adapter class
ADAPTERS: dict[str, type[QwenVLAdapter]] = {a.family: a for a in (Qwen2VLAdapter, Qwen2_5VLAdapter, Qwen3VLAdapter)}

__all__ = ["ADAPTERS", "CompressionStats", "QwenVLAdapter", "Qwen2VLAdapter", "Qwen2_5VLAdapter", "Qwen3VLAdapter"]
