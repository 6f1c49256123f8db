"""LLM stages: the part of a method that runs inside the language model, on the stock model.

A stage is a module here with ``generate(adapter, method, kwargs, settings, stats) -> sequences``
(the contract of ``QwenVLAdapter.generate``). It may only use scoped mechanisms: a registered
attention function (``transformers.AttentionInterface``) switched on for one call by a context
manager, a ``Cache`` object of its own, forward hooks removed on exit. Never a class patch.
The algorithm (which entries to keep, how to allocate) lives in ``freres_lmms.core``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import contextmanager

from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

#: method name -> module of this package that holds its stage
STAGE_MODULES = {"dycoke": "dycoke", "adaretake": "adaretake"}


def stage_for(method_name: str) -> Callable | None:
    """The ``generate`` function of a method's LLM stage, or None for methods acting before the LLM."""
    module = STAGE_MODULES.get(method_name)
    if module is None:
        return None
    return importlib.import_module(f"{__name__}.{module}").generate


@contextmanager
def scoped_attention(text_model, name: str, forward: Callable, mask_builder: Callable | None = None):
    """Register ``forward`` as attention implementation ``name`` and switch ``text_model`` (the
    LLM only, not the vision tower) to it for the block; its previous implementation comes back on
    exit, also after an error. ``mask_builder`` (e.g. ``transformers.masking_utils.sdpa_mask``) is
    the mask the stock model builds for ``forward``; None: it builds none (``forward`` makes its own)."""
    AttentionInterface.register(name, forward)
    if mask_builder is not None:
        AttentionMaskInterface.register(name, mask_builder)
    previous = text_model.config._attn_implementation
    try:
        text_model.set_attn_implementation(name)
        if text_model.config._attn_implementation != name:
            raise RuntimeError(f"could not switch {type(text_model).__name__} to attention {name!r}")
        yield
    finally:
        text_model.set_attn_implementation(previous)
