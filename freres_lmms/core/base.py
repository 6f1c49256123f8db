"""The method interface of the compression core.

A method sees one video at a time as a token grid and returns the tokens that enter the LLM.
Nothing here knows about transformers: adapters in ``freres_lmms.models`` hand tensors in and
put the result back into the model's inputs.

Two kinds of method share one interface, ``compress(video) -> CompressedVideo``:

* **selection** methods keep a subset of the grid. They subclass :class:`SelectionMethod` and
  write only ``select(video) -> keep`` (sorted flat indices into ``T*H*W``); the gather of
  features, DeepStack rows and positions is done once, here.
* **synthesis** methods build new vectors (merged, frequency or re-gridded tokens). They override
  ``compress`` and must give every new token an M-RoPE position and a slot.

Position rule
-------------
``VideoTokens.positions`` holds the stock M-RoPE ``(t, h, w)`` position of every grid token, as
the model computes it for the *uncompressed* prompt. A kept token keeps its position. A
synthesized token gets the position of the region it stands for: the temporal centre of the
slices it summarizes and the spatial centre of its cell, each taken as the floor of the mean of
the original positions it covers (integer, since M-RoPE ids are integers). ``region_position``
implements this rule. Text after the video keeps its original positions, so decoding continues
from the uncompressed ``max(position) + 1`` whatever a method emits.

Slot rule
---------
``CompressedVideo.slots`` says where each emitted token sits in the prompt: at the place of grid
token ``slot``. Tokens sharing a slot are placed in emitted order. Selection methods use the kept
index; synthesized tokens use the grid token nearest their position. Qwen3-VL interleaves a
timestamp between frames, so the slot also decides which frame's span a token joins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


class CompressionError(ValueError):
    """A method cannot compress this input (bad shape, impossible budget, ...)."""


@dataclass
class VideoTokens:
    """One video as the vision encoder produced it.

    Parameters
    ----------
    features : Tensor[T, H, W, D]
        Merged visual tokens in LLM space; ``T`` temporal slices of an ``H x W`` grid.
    positions : LongTensor[3, T, H, W]
        Stock M-RoPE ``(t, h, w)`` position of each token in the uncompressed prompt.
    deepstack : list of Tensor[T, H, W, D]
        Qwen3-VL DeepStack features (one per injected LLM layer); empty for other families.
    query : Tensor[Q, D] or None
        Embeddings of the text tokens after the video in its prompt, for query-aware methods.
    question : BoolTensor[Q] or None
        Which rows of ``query`` are the question itself: the user's text, without the chat
        template's tail (end of turn, assistant header) or vision markers. None: all of them.
    """

    features: torch.Tensor
    positions: torch.Tensor
    deepstack: list[torch.Tensor] = field(default_factory=list)
    query: torch.Tensor | None = None
    question: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.features.ndim != 4:
            raise CompressionError(f"features must be [T, H, W, D], got shape {tuple(self.features.shape)}")
        grid = tuple(self.features.shape[:3])
        if tuple(self.positions.shape) != (3, *grid):
            raise CompressionError(f"positions must be [3, {grid}], got {tuple(self.positions.shape)}")
        for i, layer in enumerate(self.deepstack):
            if tuple(layer.shape[:3]) != grid:
                raise CompressionError(f"deepstack[{i}] grid {tuple(layer.shape[:3])} differs from features {grid}")
        if min(grid) < 1:
            raise CompressionError(f"empty token grid {grid}")

    @property
    def grid(self) -> tuple[int, int, int]:
        t, h, w = self.features.shape[:3]
        return int(t), int(h), int(w)

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w


@dataclass
class CompressedVideo:
    """What enters the LLM for one video.

    Parameters
    ----------
    features : Tensor[N, D]
    positions : LongTensor[3, N]
        M-RoPE ``(t, h, w)`` of each emitted token (see the module's position rule).
    slots : LongTensor[N]
        Grid index whose place in the prompt each token takes (see the slot rule).
    deepstack : list of Tensor[N, D]
        DeepStack rows matching ``features``.
    kept : LongTensor[N] or None
        For selection methods, the kept grid indices (equal to ``slots``); ``None`` when tokens
        were synthesized.
    """

    features: torch.Tensor
    positions: torch.Tensor
    slots: torch.Tensor
    deepstack: list[torch.Tensor] = field(default_factory=list)
    kept: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.features.shape[0])


def gather_tokens(video: VideoTokens, keep: torch.Tensor) -> CompressedVideo:
    """Keep the grid tokens at flat indices ``keep`` (any order; emitted sorted)."""
    n = video.num_tokens
    keep = torch.as_tensor(keep, dtype=torch.long, device=video.features.device).flatten()
    if keep.numel() and (int(keep.min()) < 0 or int(keep.max()) >= n):
        raise CompressionError(f"keep index out of range [0, {n})")
    keep = torch.unique(keep)  # sorted, no duplicates: the prompt order of the kept tokens
    flat = video.features.reshape(n, -1)
    return CompressedVideo(
        features=flat.index_select(0, keep),
        positions=video.positions.reshape(3, n).index_select(1, keep),
        slots=keep,
        deepstack=[layer.reshape(n, -1).index_select(0, keep) for layer in video.deepstack],
        kept=keep,
    )


def region_position(positions: torch.Tensor, region_mask: torch.Tensor) -> torch.Tensor:
    """Positions of synthesized tokens: floor of the mean original position of each region.

    positions : LongTensor[3, M] (grid positions, flattened); region_mask : BoolTensor[R, M].
    Returns LongTensor[3, R]. Batched: one matmul, no loop over regions.
    """
    weights = region_mask.to(torch.float64)
    counts = weights.sum(-1).clamp_min(1.0)
    mean = (positions.to(torch.float64) @ weights.T) / counts
    return mean.floor().to(torch.long)


@dataclass
class Method:
    """Base of every compression method: one required method, ``compress``.

    Subclasses are dataclasses whose fields are the method's knobs, validated in
    ``__post_init__``. ``name`` is the registry key used by model_args and Hydra.
    """

    name = "base"

    def compress(self, video: VideoTokens) -> CompressedVideo:
        """Return the tokens of ``video`` that enter the LLM. Must never exceed the input count."""
        raise NotImplementedError

    def __call__(self, video: VideoTokens) -> CompressedVideo:
        out = self.compress(video)
        if out.num_tokens > video.num_tokens:
            raise CompressionError(f"{self.name} emitted {out.num_tokens} tokens for a {video.num_tokens}-token video")
        if out.num_tokens == 0:
            raise CompressionError(f"{self.name} emitted no tokens")
        return out


@dataclass
class SelectionMethod(Method):
    """A method that keeps a subset of the grid; subclasses write ``select``."""

    def select(self, video: VideoTokens) -> torch.Tensor:
        """Flat indices into ``T*H*W`` of the tokens to keep."""
        raise NotImplementedError

    def compress(self, video: VideoTokens) -> CompressedVideo:
        return gather_tokens(video, self.select(video))
