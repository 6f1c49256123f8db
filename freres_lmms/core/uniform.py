"""``uniform``: keep every k-th temporal slice, whole.

The simplest temporal baseline (uniform frame subsampling after encoding). Either ``stride``
(keep slices 0, k, 2k, ...) or ``budget`` (the most evenly spaced slices that fit) sets it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import CompressionError, SelectionMethod, SliceStream, VideoTokens
from .budget import budget_tokens


@dataclass
class UniformMethod(SelectionMethod):
    """Keep whole temporal slices at a fixed stride.

    Parameters
    ----------
    stride : int or None
        Keep slices ``0, stride, 2*stride, ...``.
    budget : int, float or None
        Token count or retention ratio; keeps ``floor(tokens / (H*W))`` evenly spaced slices
        (first and last included). Used when ``stride`` is None. A budget below one slice is an
        error. With neither set, keeps every other slice.
    """

    name = "uniform"
    stride: int | None = None
    budget: int | float | None = None

    def __post_init__(self) -> None:
        if self.stride is not None and (isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride < 1):
            raise CompressionError(f"uniform: stride must be a positive int, got {self.stride!r}")
        if self.stride is not None and self.budget is not None:
            raise CompressionError("uniform: give stride or budget, not both")

    def slices(self, t: int, h: int, w: int) -> torch.Tensor:
        """Indices of the kept temporal slices."""
        if self.stride is not None or self.budget is None:
            return torch.arange(0, t, self.stride or 2)
        per_slice = h * w
        n = budget_tokens(self.budget, t * per_slice) // per_slice
        if n < 1:
            raise CompressionError(f"uniform: budget {self.budget} is below one temporal slice ({per_slice} tokens)")
        return torch.linspace(0, t - 1, n, dtype=torch.float64).round().long().unique()

    def select(self, video: VideoTokens) -> torch.Tensor:
        t, h, w = video.grid
        frames = self.slices(t, h, w).to(video.features.device)
        per_slice = torch.arange(h * w, device=video.features.device)
        return (frames[:, None] * (h * w) + per_slice[None, :]).flatten()

    def stream(self, grid: tuple[int, int, int]) -> SliceStream:
        """Online: only the kept slices are held."""
        return SliceStream(self, grid, self.slices(*grid))
