"""``fourier``: Fourier-VLM / "Fourier Compressor" (arXiv 2508.06038), a 2-D DCT low-pass per frame.

Each temporal slice's ``H x W`` token grid is treated as a ``D``-channel image: an orthonormal 2-D
DCT-II over (H, W) in fp32, a crop to the low-frequency block ``h' x w'``, and an orthonormal
inverse 2-D DCT **of size** ``h' x w'``. The result is a coarser grid of ``T * h' * w'``
synthesized tokens (not a subset of the input), cast back to the input dtype. There is no temporal
compression. This reproduces ``whyisverysmart/Fourier-Compressor`` (``fourier_compressor/compress.py``,
``integrations/qwen_vl/helpers.py``): ``h' = max(floor(H * rho), 1)``, ``w'`` likewise, rho = 2/3.

The whole transform is linear and separable, so it is two batched matrix products per layer with
precomposed ``[h', H]`` and ``[w', W]`` operators (forward DCT rows, crop, inverse DCT); DeepStack
layers get the identical operator.

Magnitude: the official crop-then-smaller-inverse multiplies the DC (mean) component by
``sqrt(H W / (h' w'))`` (about 1/rho; the paper fine-tunes the model to absorb it). ``rescale=True``
multiplies the output by ``sqrt(h' w' / (H W))`` so that token means are preserved (a documented
deviation for training-free use; off by default).

Positions (``core.base`` rule): coarse cell ``(i, j)`` of slice ``t`` stands for the original rows
and columns it covers on the same spatial extent (rows split as evenly as integers allow:
row ``r`` belongs to cell ``r * h' // H``), and takes the floor of the mean of their positions (t
unchanged). Its slot is the grid token at the floor of the mean grid coordinates of its region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from .base import CompressedVideo, CompressionError, Method, TokenStream, VideoTokens, compress_whole
from .budget import budget_tokens
from .dct import dct_basis

# fp32 elements of one working chunk of frames (1 GiB): bounds the transient fp32 copy on long
# clips (1800 x 24 x 24 x 4096 would otherwise need 17 GB); each chunk is one batched product.
CHUNK_ELEMENTS = 1 << 28


def official_grid(h: int, w: int, rho: float) -> tuple[int, int]:
    """The official floor rule: ``(max(floor(H rho), 1), max(floor(W rho), 1))``."""
    return max(math.floor(h * rho), 1), max(math.floor(w * rho), 1)


def budget_grid(t: int, h: int, w: int, target: int) -> tuple[int, int]:
    """Largest coarse grid ``(h', w')`` of the official floor rule (one rho for both axes, so the
    aspect ratio is kept as closely as integers allow) with ``t * h' * w' <= target``.

    The grids the floor rule reaches change only at rho = i/H or j/W, so they are the chain
    ``(i, max(W i // H, 1))`` and ``(max(H j // W, 1), j)``; counts grow along it, so the largest
    count that fits is unique."""
    per_slice = target // t
    if per_slice < 1:
        raise CompressionError(f"fourier: budget of {target} tokens is below one token per temporal slice "
                               f"({t} slices; Fourier compresses space only)")
    candidates = {(i, max(w * i // h, 1)) for i in range(1, h + 1)} | {(max(h * j // w, 1), j) for j in range(1, w + 1)}
    fitting = [c for c in candidates if c[0] * c[1] <= per_slice]
    return max(fitting, key=lambda c: (c[0] * c[1], c))  # (1, 1) always fits


@lru_cache(maxsize=64)
def lowpass_operator(n: int, kept: int, device: torch.device) -> torch.Tensor:
    """``[kept, n]`` fp32: size-``n`` orthonormal DCT-II, keep the first ``kept`` frequencies,
    size-``kept`` orthonormal inverse DCT. Applied along both grid axes it is the official method."""
    return dct_basis(kept, device).T @ dct_basis(n, device)[:kept]


def cell_members(n: int, kept: int, device=None) -> torch.Tensor:
    """``[kept, n]`` 0/1 float64: which original rows (or columns) each coarse cell covers."""
    cell = torch.arange(n, device=device) * kept // n
    return (cell[None, :] == torch.arange(kept, device=device)[:, None]).double()


def regrid(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``x [T, H, W, D]`` -> ``[T, h', w', D]`` in ``x``'s dtype via fp32 ``rows [h', H]`` and
    ``cols [w', W]``, in chunks of frames bounded by ``CHUNK_ELEMENTS``. Each axis is one 2-D
    product whose columns are the frames' (not a batch of per-frame products, whose kernel
    changes with the batch size), so a slice's result does not depend on how many slices come
    with it: a video streamed in chunks gets the tokens of the whole-video call."""
    t, h, w, d = x.shape
    hk, wk = rows.shape[0], cols.shape[0]
    out = torch.empty(t, hk, wk, d, dtype=x.dtype, device=x.device)
    step = max(1, CHUNK_ELEMENTS // max(1, h * w * d))
    for lo in range(0, t, step):  # a handful of chunks, not a loop over frames
        chunk = x[lo:lo + step].float()
        n = chunk.shape[0]
        along_h = rows @ chunk.permute(1, 0, 2, 3).reshape(h, -1)  # [h', n W D]
        along_w = cols @ along_h.view(hk, n, w, d).permute(2, 1, 0, 3).reshape(w, -1)  # [w', n h' D]
        out[lo:lo + step] = along_w.view(wk, n, hk, d).permute(1, 2, 0, 3).to(x.dtype)
    return out


@dataclass
class FourierMethod(Method):
    """Fourier-VLM: per-frame 2-D DCT low-pass onto a coarser token grid.

    Based on https://arxiv.org/abs/2508.06038 (v3 title "Fourier Compressor"), code
    github.com/whyisverysmart/Fourier-Compressor.

    Parameters
    ----------
    rho : float
        Kept fraction per spatial axis, in (0, 1]: ``h' = max(floor(H rho), 1)``, ``w'`` likewise
        (the official rule, default 2/3, about 44 % of the tokens). Ignored when ``budget`` is set.
    budget : int, float or None
        Token count or retention ratio. Picks the largest floor-rule grid (one rho for both axes)
        with ``T h' w' <= budget``: exact when reachable, else the nearest reachable count below.
        Above the video's size keeps the full grid (identity). Below one token per slice is an error.
    rescale : bool
        False (official): output as the official code gives it, DC inflated by ``sqrt(HW/(h'w'))``.
        True (deviation): multiply by ``sqrt(h'w'/(HW))`` so a constant grid stays constant.
    """

    name = "fourier"
    rho: float = 2 / 3
    budget: int | float | None = None
    rescale: bool = False
    last_counts: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.rho, bool) or not isinstance(self.rho, (int, float)) or not 0.0 < self.rho <= 1.0:
            raise CompressionError(f"fourier: rho must be a number in (0, 1], got {self.rho!r}")
        if not isinstance(self.rescale, bool):
            raise CompressionError(f"fourier: rescale must be a bool, got {self.rescale!r}")
        budget_tokens(self.budget, 1)  # type and sign check only (the size is known per video)

    def coarse_grid(self, t: int, h: int, w: int) -> tuple[int, int]:
        """``(h', w')`` for a ``T x H x W`` grid under ``rho`` or ``budget``."""
        if self.budget is None:
            return official_grid(h, w, self.rho)
        return budget_grid(t, h, w, budget_tokens(self.budget, t * h * w))

    def compress(self, video: VideoTokens) -> CompressedVideo:
        return compress_whole(self.stream(video.grid), video)

    def stream(self, grid: tuple[int, int, int]) -> FourierStream:
        """Online: each slice is transformed on its own, so a chunk is regridded as it arrives."""
        return FourierStream(self, grid)

    @staticmethod
    def coarse_positions(positions: torch.Tensor, hk: int, wk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """M-RoPE positions ``[3, T h' w']`` and slots ``[T h' w']`` of the coarse grid tokens.

        Each is the floor of the mean over the covered ``rows x cols`` rectangle: exact integer sums
        (float64 matmuls with 0/1 masks) divided by the cell size with integer floor division."""
        _, t, h, w = positions.shape
        device = positions.device
        rows, cols = cell_members(h, hk, device), cell_members(w, wk, device)  # [h', H], [w', W]
        size = (rows.sum(1)[:, None] * cols.sum(1)[None, :]).long()  # [h', w']

        def region_floor_mean(grid: torch.Tensor) -> torch.Tensor:  # [..., H, W] -> [..., h', w']
            sums = rows @ grid.double() @ cols.T
            return torch.div(sums.round().long(), size, rounding_mode="floor")

        pos = region_floor_mean(positions).reshape(3, -1)
        r = region_floor_mean(torch.arange(h, device=device)[:, None].expand(h, w))
        c = region_floor_mean(torch.arange(w, device=device)[None, :].expand(h, w))
        frame = torch.arange(t, device=device)[:, None, None]
        slots = ((frame * h + r) * w + c).reshape(-1)
        return pos, slots


class FourierStream(TokenStream):
    """Regrids every chunk of slices as it comes (the transform is per slice) and keeps the result."""

    def __init__(self, method: FourierMethod, grid: tuple[int, int, int]):
        super().__init__(method, grid)
        t, h, w = self.grid
        self.coarse = method.coarse_grid(t, h, w)
        self.scale = math.sqrt(self.coarse[0] * self.coarse[1] / (h * w)) if method.rescale else 1.0
        self.chunks: list[list[torch.Tensor]] = []

    def _take(self, start: int, layers: list[torch.Tensor]) -> None:
        _, h, w = self.grid
        hk, wk = self.coarse
        if (hk, wk) == (h, w):
            # the round trip is the identity (up to fp32 rounding, skipped): keep the input exactly
            self.chunks.append([x.reshape(-1, x.shape[-1]) for x in layers])
            return
        device = layers[0].device
        rows = lowpass_operator(h, hk, device) * math.sqrt(self.scale)  # the scale split over both axes
        cols = lowpass_operator(w, wk, device) * math.sqrt(self.scale)
        self.chunks.append([regrid(x, rows, cols).reshape(-1, x.shape[-1]) for x in layers])

    def _finish(self, positions, query, question) -> CompressedVideo:
        t, h, w = self.grid
        hk, wk = self.coarse
        chunks, self.chunks = self.chunks, []
        out = chunks[0] if len(chunks) == 1 else [torch.cat([c[i] for c in chunks]) for i in range(len(chunks[0]))]
        positions, slots = self.method.coarse_positions(positions, hk, wk)
        budget = self.method.budget
        self.method.last_counts = {"grid": (t, h, w), "coarse": (t, hk, wk), "scale": self.scale,
                                   "target": None if budget is None else budget_tokens(budget, t * h * w),
                                   "total": t * hk * wk}
        return CompressedVideo(out[0], positions, slots, out[1:])
