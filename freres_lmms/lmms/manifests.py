"""Entry point of the ``lmms_eval.models`` group: a ``ModelManifest`` per registered id.

Imports only the core registry (torch, no transformers), so lmms-eval's model registry stays
quick to build.
"""

from __future__ import annotations

from ..families import FAMILIES


def model_ids() -> list[str]:
    """``vtc_{family}`` (method from model_args) and ``{method}_{family}`` for every method."""
    from ..core import METHODS

    return [f"vtc_{family}" for family in FAMILIES] + [f"{m}_{family}" for m in METHODS for family in FAMILIES]


def manifests():
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=i, simple_class_path=f"freres_lmms.lmms.ids.{i}") for i in model_ids()]
