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
        return self.checked(self.compress(video), video.num_tokens)

    def checked(self, out: CompressedVideo, num_tokens: int) -> CompressedVideo:
        """``out`` if it is a valid output for a ``num_tokens``-token video, else an error."""
        if out.num_tokens > num_tokens:
            raise CompressionError(f"{self.name} emitted {out.num_tokens} tokens for a {num_tokens}-token video")
        if out.num_tokens == 0:
            raise CompressionError(f"{self.name} emitted no tokens")
        return out

    def stream(self, grid: tuple[int, int, int]) -> TokenStream:
        """A :class:`TokenStream` that takes this method's ``T x H x W`` video in chunks of slices.

        The default keeps the whole grid and runs ``compress`` at the end (methods that need every
        token at once); methods that can work online return a stream that keeps only what they use."""
        return GridStream(self, grid)


@dataclass
class SelectionMethod(Method):
    """A method that keeps a subset of the grid; subclasses write ``select``."""

    def select(self, video: VideoTokens) -> torch.Tensor:
        """Flat indices into ``T*H*W`` of the tokens to keep."""
        raise NotImplementedError

    def compress(self, video: VideoTokens) -> CompressedVideo:
        return gather_tokens(video, self.select(video))


class TokenStream:
    """One video's token grid fed to a method in chunks of temporal slices, in order.

    ``feed(features [t, H, W, D], deepstack)`` takes the next ``t`` slices; ``finish(positions,
    query, question)`` returns what ``method(VideoTokens(...))`` returns for the whole grid, equal to
    it token for token. Subclasses keep only what their method will use (``_take``) and build the
    output from it (``_finish``), so a long video's features need not all be held at once.
    """

    def __init__(self, method: Method, grid: tuple[int, int, int]):
        self.method = method
        self.grid = tuple(int(g) for g in grid)
        self.filled = 0  # slices fed so far
        self.depth: int | None = None  # feature layers per chunk (1 + DeepStack layers)

    def feed(self, features: torch.Tensor, deepstack: list[torch.Tensor] | tuple = ()) -> None:
        t, h, w = self.grid
        layers = [features, *deepstack]
        if features.ndim != 4 or tuple(features.shape[1:3]) != (h, w):
            raise CompressionError(f"{self.method.name}: a chunk must be [t, {h}, {w}, D], got {tuple(features.shape)}")
        if any(tuple(x.shape[:3]) != tuple(features.shape[:3]) for x in layers):
            raise CompressionError(f"{self.method.name}: DeepStack chunk grids differ from the features'")
        if self.depth is not None and len(layers) != self.depth:
            raise CompressionError(f"{self.method.name}: chunks carry {len(layers)} feature layers, earlier ones {self.depth}")
        if self.filled + features.shape[0] > t:
            raise CompressionError(f"{self.method.name}: fed {self.filled + features.shape[0]} slices to a {t}-slice video")
        self.depth = len(layers)
        self._take(self.filled, layers)
        self.filled += int(features.shape[0])

    def finish(self, positions: torch.Tensor, query: torch.Tensor | None = None,
               question: torch.Tensor | None = None) -> CompressedVideo:
        t, h, w = self.grid
        if self.filled != t:
            raise CompressionError(f"{self.method.name}: {self.filled} of the video's {t} slices were fed")
        if tuple(positions.shape) != (3, t, h, w):
            raise CompressionError(f"positions must be [3, {t}, {h}, {w}], got {tuple(positions.shape)}")
        return self.method.checked(self._finish(positions, query, question), t * h * w)

    def _take(self, start: int, layers: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def _finish(self, positions, query, question) -> CompressedVideo:
        raise NotImplementedError


class GridStream(TokenStream):
    """Keeps the whole grid (one buffer per layer, filled chunk by chunk; a single chunk that is the
    whole video is kept as given, without a copy) and runs ``method.compress`` on it at the end."""

    def __init__(self, method: Method, grid: tuple[int, int, int]):
        super().__init__(method, grid)
        self.layers: list[torch.Tensor] = []

    def _take(self, start: int, layers: list[torch.Tensor]) -> None:
        t = layers[0].shape[0]
        if start == 0 and t == self.grid[0]:
            self.layers = list(layers)
            return
        if not self.layers:
            self.layers = [x.new_empty((self.grid[0], *x.shape[1:])) for x in layers]
        for buffer, x in zip(self.layers, layers):
            buffer[start:start + t] = x

    def _finish(self, positions, query, question) -> CompressedVideo:
        video = VideoTokens(self.layers[0], positions, self.layers[1:], query, question)
        self.layers = []  # the method's output is all that is left to hold
        return self.method.compress(video)


class SliceStream(TokenStream):
    """Keeps whole slices ``slices`` (sorted, distinct) and emits them, as a selection of those
    slices' tokens would (``gather_tokens``)."""

    def __init__(self, method: Method, grid: tuple[int, int, int], slices: torch.Tensor):
        super().__init__(method, grid)
        self.slices = slices.cpu()
        self.kept: list[list[torch.Tensor]] = []

    def _take(self, start: int, layers: list[torch.Tensor]) -> None:
        t = layers[0].shape[0]
        inside = self.slices[(self.slices >= start) & (self.slices < start + t)] - start
        if inside.numel():
            local = inside.to(layers[0].device)
            self.kept.append([x.index_select(0, local) for x in layers])

    def _finish(self, positions, query, question) -> CompressedVideo:
        _, h, w = self.grid
        hw = h * w
        if not self.kept:
            raise CompressionError(f"{self.method.name}: no slice kept")
        layers = [torch.cat([chunk[i] for chunk in self.kept]).reshape(self.slices.numel() * hw, -1)
                  for i in range(len(self.kept[0]))]
        self.kept = []
        device = positions.device
        keep = (self.slices.to(device)[:, None] * hw + torch.arange(hw, device=device)[None, :]).flatten()
        return CompressedVideo(layers[0], positions.reshape(3, -1).index_select(1, keep), keep, layers[1:], kept=keep)


def compress_whole(stream: TokenStream, video: VideoTokens) -> CompressedVideo:
    """``stream``'s output for ``video`` fed as one chunk: how an online method's ``compress`` runs,
    so the one-shot and the streamed paths are one code path."""
    stream._take(0, [video.features, *video.deepstack])
    stream.filled = video.grid[0]
    return stream._finish(video.positions, video.query, video.question)
