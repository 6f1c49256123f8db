"""The installed environment is the locked one: constraints.txt pins every distribution of the venv."""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "constraints.txt"
NOT_LOCKED = {"freres-lmms", "pip", "setuptools", "wheel"}  # the project itself and the venv's tools


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_installed_distributions_equal_the_lock():
    locked = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            locked[norm(name)] = version
    installed = {norm(d.metadata["Name"]): d.version for d in md.distributions()}
    installed = {k: v for k, v in installed.items() if k not in NOT_LOCKED}
    drift = sorted(f"{k}: installed {installed.get(k)}, locked {locked.get(k)}"
                   for k in set(locked) | set(installed) if installed.get(k) != locked.get(k))
    assert not drift, "the venv differs from constraints.txt (make install, or make lock to re-pin):\n" + "\n".join(drift)
