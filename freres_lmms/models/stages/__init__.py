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

#: method name -> module of this package that holds its stage
STAGE_MODULES = {"dycoke": "dycoke", "adaretake": "adaretake"}


def stage_for(method_name: str) -> Callable | None:
    """The ``generate`` function of a method's LLM stage, or None for methods acting before the LLM."""
    module = STAGE_MODULES.get(method_name)
    if module is None:
        return None
    return importlib.import_module(f"{__name__}.{module}").generate
