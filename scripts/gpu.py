"""What the GPU scripts share."""

from __future__ import annotations

import sys

import torch


def cuda_or_exit(script: str, why: str) -> torch.device:
    """The CUDA device, or exit with a message saying the script needs one."""
    if not torch.cuda.is_available():
        sys.exit(f"{script} {why}: no CUDA device here")
    return torch.device("cuda")
