"""The wrapper's own model_args, checked before anything is loaded.

A bad configuration must fail at construction, with a message that names the argument and what
was expected, not per sample after the vision encoder has run (lmms-eval would then write a 0%
result and exit 0). The method's knobs are checked by the method itself (``core.build_method``).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

# paired: Qwen's native video mode, two frames per latent slice; per_frame: each sampled frame its
# own slice (the Fre-Res paper's token accounting, twice the encoder cost)
FRAME_ENCODINGS = ("paired", "per_frame")
DTYPES = {"auto": None, "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
ATTENTION = ("sdpa", "eager", "flash_attention_2")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class SettingsError(ValueError):
    """A model_arg the wrapper cannot use; the message names it."""


def positive_int(name: str, value) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(f"{name} must be true or false, got {value!r}")
    return value


def choice(name: str, value, allowed) -> str:
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def check_fps(fps) -> float | None:
    if fps is None:
        return None
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
        raise SettingsError(f"fps must be a number > 0 (sample at most this rate), got {fps!r}")
    return float(fps)


def check_frame_size(value, factor: int) -> tuple[int, int] | None:
    """``frame_size=448`` or ``448x640`` (height x width): decode frames at this size, which must be a
    multiple of the vision tower's ``patch_size * spatial_merge_size`` (``factor``) on both sides."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if not re.fullmatch(r"\d+(x\d+)?", text) or isinstance(value, bool):
        raise SettingsError(f"frame_size must be a size such as 448 or 448x640 (height x width), got {value!r}")
    height, _, width = text.partition("x")
    size = (int(height), int(width or height))
    if min(size) < factor or any(side % factor for side in size):
        raise SettingsError(f"frame_size={value}: both sides must be multiples of {factor} "
                            f"(the vision patch times the spatial merge), e.g. {factor * 16}")
    return size


def stream_frames_arg(value, temporal: int) -> int:
    """Frames per preprocessing chunk with ``frame_size`` (0: the processor's one call)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value % temporal:
        raise SettingsError(f"stream_frames must be 0 or a positive multiple of {temporal} (the temporal patch), got {value!r}")
    return value


def check_device(device: str | None) -> torch.device:
    """The given device, or this process's: its own GPU under ``accelerate launch``, else cuda or cpu."""
    if device is None:
        if not torch.cuda.is_available():
            return torch.device("cpu")
        from accelerate import PartialState

        return PartialState().device
    try:
        out = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise SettingsError(f"device must be cpu, cuda or cuda:N, got {device!r} ({err})") from None
    if out.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"device={device}: no CUDA device is available here")
    return out


def check_pretrained(pretrained: str) -> str:
    """A local checkpoint directory or a hub id; a path that does not exist is named as such."""
    path = Path(pretrained).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise SettingsError(f"pretrained={pretrained}: the directory has no config.json (not a checkpoint)")
        return str(path)
    looks_local = path.is_absolute() or pretrained.startswith((".", "~")) or pretrained.count("/") > 1
    if looks_local or not HUB_ID.match(pretrained):
        raise SettingsError(f"pretrained={pretrained}: no such checkpoint directory, and not a hub id "
                            f"(owner/name, e.g. Qwen/Qwen2-VL-7B-Instruct)")
    return pretrained


def check_max_memory(max_memory: str | None) -> dict | None:
    """``max_memory=70GiB`` (model_args cannot hold commas): the same cap on every visible GPU."""
    if max_memory is None:
        return None
    if not isinstance(max_memory, str) or not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", max_memory.strip()):
        raise SettingsError(f"max_memory must be a size per GPU such as 70GiB, got {max_memory!r}")
    return {i: max_memory.strip() for i in range(torch.cuda.device_count())} or None
