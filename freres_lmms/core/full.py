"""``full``: no compression; the reference every other method is compared with."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import SelectionMethod, VideoTokens


@dataclass
class FullMethod(SelectionMethod):
    """Keep every visual token (identity)."""

    name = "full"

    def select(self, video: VideoTokens) -> torch.Tensor:
        return torch.arange(video.num_tokens, device=video.features.device)
