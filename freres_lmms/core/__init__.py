"""Model-free compression methods: tensors in, tokens out. One method per file."""

from __future__ import annotations

from .adaretake import AdaReTaKeMethod
from .base import (
    CompressedVideo,
    CompressionError,
    GridStream,
    Method,
    SelectionMethod,
    SliceStream,
    TokenStream,
    VideoTokens,
    compress_whole,
    gather_tokens,
    region_position,
)
from .budget import budget_tokens, check_budget
from .cdpruner import CDPrunerMethod
from .dycoke import DyCokeMethod
from .fourier import FourierMethod
from .freres import FreResMethod
from .full import FullMethod
from .uniform import UniformMethod

#: Registry of method names (model_args ``method=``, Hydra ``method/``) to classes.
METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (FullMethod, UniformMethod, FreResMethod, DyCokeMethod, CDPrunerMethod, FourierMethod, AdaReTaKeMethod)}


def build_method(name: str, **knobs) -> Method:
    """Instantiate a registered method; an unknown name lists the known ones."""
    if name not in METHODS:
        raise KeyError(f"unknown compression method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    if "budget" in knobs:  # every method's budget has the same meaning: refused here, before any work
        check_budget(knobs["budget"])
    try:
        return METHODS[name](**knobs)
    except TypeError as err:
        raise CompressionError(f"method {name!r} got unexpected options {sorted(knobs)}: {err}") from None


__all__ = [
    "METHODS",
    "AdaReTaKeMethod",
    "CDPrunerMethod",
    "CompressedVideo",
    "CompressionError",
    "DyCokeMethod",
    "FourierMethod",
    "FreResMethod",
    "FullMethod",
    "GridStream",
    "Method",
    "SelectionMethod",
    "SliceStream",
    "TokenStream",
    "UniformMethod",
    "VideoTokens",
    "budget_tokens",
    "build_method",
    "check_budget",
    "compress_whole",
    "gather_tokens",
    "region_position",
]
