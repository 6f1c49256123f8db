"""Importable classes behind every registered model id (see ``manifests.model_ids``).

``vtc_{family}`` is the family's wrapper, its method chosen by model_args. ``{method}_{family}``
subclasses it with the method fixed; its other knobs still come from model_args
(``--model uniform_qwen2vl --model_args stride=4``).
"""

from __future__ import annotations

from ..core import METHODS
from .families import FAMILY_CLASSES

for _family, _base in FAMILY_CLASSES.items():
    globals()[f"vtc_{_family}"] = _base
    for _method in METHODS:
        globals()[f"{_method}_{_family}"] = type(
            f"{_method}_{_family}", (_base,), {"default_method": _method, "default_method_fixed": True, "__module__": __name__}
        )
