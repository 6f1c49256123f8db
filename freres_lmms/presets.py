"""Method presets: ``freres_lmms/conf/method/<name>.yaml`` (the Hydra ``method`` group) as objects.

A preset is a method's registry ``name`` plus its knobs; scripts and tests build a paper's
instantiation from it without composing a whole Hydra config.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from .core import Method, build_method

METHOD_PRESETS = Path(__file__).resolve().parent / "conf" / "method"


def method_preset(preset: str, **override) -> Method:
    """Build the method of ``conf/method/<preset>.yaml``; ``override`` replaces knobs."""
    path = METHOD_PRESETS / f"{preset}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in METHOD_PRESETS.glob("*.yaml")))
        raise KeyError(f"no method preset {preset!r} in {METHOD_PRESETS}; known: {known}")
    knobs = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    name = knobs.pop("name")
    return build_method(name, **{**knobs, **override})
