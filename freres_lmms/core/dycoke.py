"""``dycoke``: DyCoke (Tao et al., CVPR 2025), temporal token merging + decode-time KV pruning.

Two stages, as in the official code (``KD-TAO/DyCoke`` @ dd74634):

* **TTM** (before the LLM, this module's ``select``). Despite its name it prunes: a frame (one
  Qwen temporal slice of the merged grid) is compared position-wise with a reference frame and
  only its ``n_keep = int((1 - k) * N)`` least similar tokens stay. Stage 1 pairs frames
  (0, 1), (2, 3), ...: frame 2m stays whole, frame 2m+1 is pruned against it. Stage 2 takes
  windows of 4 starting at i = 0, 4, 8, ... while ``i < F - 4`` and prunes frame i+2 against
  frame i (both full originals). Kept tokens keep their stock M-RoPE position (gather).
  For ``F % 4 == 0`` the count is ``(F/4 + 1) N + (3F/4 - 1) n_keep`` (frame F-2 stays whole
  because of the range bound).
* **Dynamic KV pruning** (during decoding, ``models/stages/dycoke.py``; the algorithm is
  :class:`DecodeSelection` here). At each decode step the new token's attention row at layer
  ``layer - 1`` (fp32 softmax over the whole key sequence, mean over heads) is sliced to the
  visual tokens; on the first step, or when its cosine similarity with the previous step's row
  is below ``similarity_threshold``, the top ``int(n_vis * (1 - prune_ratio))`` visual tokens
  are selected and layers ``>= layer`` attend to every non-visual token plus those. The full KV
  cache is kept, so memory does not drop.

Deviations and choices (each a knob, defaults noted):

* ``odd_last_frame``: with odd F the official stage 1 silently drops the last, unpaired frame.
  Default ``"keep"`` keeps it whole; ``"drop"`` reproduces the official code.
* ``reselect``: on a step whose row is similar to the previous one, the official code does not
  reuse the previous selection: that step runs with the full visual KV (``"code"``, default).
  ``"reuse"`` keeps the previous selection, as the paper describes.
* ``exclude_last_visual``: the official prunable span is ``len(TTM output) - 1`` tokens long, so
  the last visual token of a sample is never pruned (default ``True``, official).
* ``budget``: the official count is set by ``k``; a budget instead solves ``n_keep`` (the same
  per pruned frame) from the count formula for this F and N.
* The decode state lives in one ``generate`` call, per batch row: the official
  ``attention_score`` leaked from one sample into the next.
* Similarities use fp32 accumulation (the official code works in the model dtype).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .base import CompressedVideo, CompressionError, SelectionMethod, TokenStream, VideoTokens
from .budget import budget_tokens


@dataclass(frozen=True)
class TTMPlan:
    """Which frames TTM keeps whole, prunes (stage 1 / stage 2) or drops, for F frames."""

    frames: int
    pairs: int  # stage-1 pairs (2m, 2m+1)
    windows: int  # stage-2 windows (i, i+2), i = 0, 4, ...
    dropped: int  # the unpaired last frame in "drop" mode

    @classmethod
    def build(cls, frames: int, odd_last_frame: str = "keep") -> TTMPlan:
        pairs = frames // 2  # len(range(0, F - 1, 2))
        windows = max(0, math.ceil((frames - 4) / 4))  # len(range(0, F - 4, 4))
        dropped = int(frames % 2 == 1 and odd_last_frame == "drop")
        return cls(frames, pairs, windows, dropped)

    @property
    def pruned(self) -> int:
        """Frames that keep ``n_keep`` tokens."""
        return self.pairs + self.windows

    @property
    def whole(self) -> int:
        """Frames kept entirely."""
        return self.frames - self.pruned - self.dropped

    def count(self, per_frame: int, n_keep: int) -> int:
        return self.whole * per_frame + self.pruned * n_keep


def cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity over the last dim with fp32 accumulation (no fp32 copy of the inputs)."""
    dot = (a * b).sum(-1, dtype=torch.float32)
    norms = a.pow(2).sum(-1, dtype=torch.float32) * b.pow(2).sum(-1, dtype=torch.float32)
    return dot / norms.sqrt().clamp_min(eps)


def ttm_keep(features: torch.Tensor, n_keep: int, odd_last_frame: str = "keep", start: int = 0,
             total: int | None = None) -> torch.Tensor:
    """Flat indices (into ``F*N`` of the whole clip, sorted) that DyCoke's TTM keeps of frames
    ``start .. start + len(features)`` of a ``total``-frame clip (default: the whole clip).

    features : Tensor[F', N, D]. A pruned frame is compared with its reference (stage 1: frame
    ``2m + 1`` with ``2m``; stage 2: frame ``i + 2`` with ``i``, ``i = 0, 4, ...``), both inside the
    same 4-frame window, so a clip can be taken window by window (``start`` a multiple of 4). Batched
    over the pruned frames (no per-frame loop).
    """
    frames, n, _ = features.shape
    total = frames if total is None else total
    if start % 4 or start + frames > total:
        raise CompressionError(f"dycoke: frames {start}..{start + frames} are not whole TTM windows of a {total}-frame clip")
    plan = TTMPlan.build(total, odd_last_frame)
    device = features.device
    frame = torch.arange(start, start + frames, device=device)
    # stage 1 prunes frames 1, 3, ... < 2 * pairs against the frame before; stage 2 frames i + 2 with
    # i = 0, 4, ... < 4 * windows against two before (those are not in a pair's pruned half)
    paired = (frame % 2 == 1) & (frame < 2 * plan.pairs)
    windowed = (frame % 4 == 2) & (frame - 2 < 4 * plan.windows)
    pruned = paired | windowed
    reference = torch.where(paired, frame - 1, frame - 2)[pruned] - start
    local = (frame[pruned] - start)
    sim = cosine(features.index_select(0, reference), features.index_select(0, local))  # [P, N]
    idx = sim.topk(n_keep, dim=-1, largest=False).indices  # the least similar tokens stay
    kept = [(frame[pruned][:, None] * n + idx).flatten()]
    whole = ~pruned
    if plan.dropped:
        whole &= frame != total - 1
    kept.append((frame[whole][:, None] * n + torch.arange(n, device=device)).flatten())
    return torch.cat(kept).sort().values


@dataclass
class DyCokeMethod(SelectionMethod):
    """DyCoke: TTM before the LLM here, dynamic KV pruning in the decode stage.

    Based on https://arxiv.org/abs/2411.15024 and its official code (see the module docstring).

    Parameters
    ----------
    k : float, default 0.7
        Merging ratio K (``dycoke_k``): a pruned frame keeps ``int((1 - k) * N)`` tokens.
        ``k = 0`` keeps everything. Ignored when ``budget`` is set.
    budget : int, float or None
        Target prefill visual-token count (int) or ratio (float in (0, 1]). Solves the largest
        per-frame ``n_keep`` whose TTM count fits; a target at or above the largest reachable
        count keeps everything TTM can keep, one below the count at ``n_keep = 0`` (whole frames
        only) is a CompressionError. ``last_counts`` reports what was emitted.
    odd_last_frame : "keep" or "drop", default "keep"
        Odd F: keep the unpaired last frame whole, or drop it as the official code does.
    layer : int, default 3
        L (``dycoke_l``): the decode attention row is read at layer L-1; layers >= L are pruned.
    prune_ratio : float, default 0.8
        P (``dycoke_p``): layers >= L attend to ``int(n_vis * (1 - P))`` visual tokens.
    reselect : "code" or "reuse", default "code"
        What a step whose attention row is similar to the previous one does: run with the full
        visual KV (official code) or reuse the previous selection (paper).
    similarity_threshold : float, default 0.9
        Re-select when ``cos(a_t, a_{t-1})`` is below this (hard-coded in the official code).
    exclude_last_visual : bool, default True
        Official off-by-one: the last visual token of a sample is never prunable.
    """

    name = "dycoke"
    k: float = 0.7
    budget: int | float | None = None
    odd_last_frame: str = "keep"
    layer: int = 3
    prune_ratio: float = 0.8
    reselect: str = "code"
    similarity_threshold: float = 0.9
    exclude_last_visual: bool = True
    last_counts: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for knob in ("k", "prune_ratio"):
            value = getattr(self, knob)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise CompressionError(f"dycoke: {knob} must be a number in [0, 1], got {value!r}")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 1:
            raise CompressionError(f"dycoke: layer must be an int >= 1, got {self.layer!r}")
        if self.odd_last_frame not in ("keep", "drop"):
            raise CompressionError(f"dycoke: odd_last_frame must be 'keep' or 'drop', got {self.odd_last_frame!r}")
        if self.reselect not in ("code", "reuse"):
            raise CompressionError(f"dycoke: reselect must be 'code' or 'reuse', got {self.reselect!r}")
        threshold = self.similarity_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise CompressionError(f"dycoke: similarity_threshold must be a finite number, got {threshold!r}")
        if not isinstance(self.exclude_last_visual, bool):
            raise CompressionError(f"dycoke: exclude_last_visual must be a bool, got {self.exclude_last_visual!r}")
        budget_tokens(self.budget, 1)  # type and range check only

    def n_keep(self, frames: int, per_frame: int) -> int:
        """Tokens kept per pruned frame: from ``k``, or solved from ``budget``."""
        if self.budget is None:
            return int((1 - self.k) * per_frame)  # int(), as the official code
        plan = TTMPlan.build(frames, self.odd_last_frame)
        target = budget_tokens(self.budget, frames * per_frame)
        floor = plan.count(per_frame, 0)
        if target < floor:
            raise CompressionError(
                f"dycoke: budget {self.budget!r} ({target} tokens) is below TTM's minimum {floor} "
                f"({plan.whole} whole frames of {per_frame} tokens, n_keep = 0)"
            )
        if plan.pruned == 0:
            return per_frame
        return min(per_frame, (target - floor) // plan.pruned)

    def select(self, video: VideoTokens) -> torch.Tensor:
        t, h, w = video.grid
        n = h * w
        if t == 1 and self.odd_last_frame == "drop":
            raise CompressionError("dycoke: a single frame has no pair and odd_last_frame='drop' would drop it")
        n_keep = self.n_keep(t, n)
        keep = ttm_keep(video.features.reshape(t, n, -1), n_keep, self.odd_last_frame)
        self._count(t, n, n_keep)
        return keep

    def _count(self, t: int, n: int, n_keep: int) -> None:
        plan = TTMPlan.build(t, self.odd_last_frame)
        self.last_counts = {"frames": t, "per_frame": n, "n_keep": n_keep, "whole_frames": plan.whole,
                            "pruned_frames": plan.pruned, "dropped_frames": plan.dropped,
                            "total": plan.count(n, n_keep)}

    def stream(self, grid: tuple[int, int, int]) -> DyCokeStream:
        """Online: TTM compares frames within windows of 4, so each window keeps its tokens as it completes."""
        return DyCokeStream(self, grid)


class DyCokeStream(TokenStream):
    """TTM window by window: complete 4-frame windows are pruned as they arrive (a partial one waits for
    the next chunk), and only their kept tokens are held; the budget is checked before the first chunk."""

    def __init__(self, method: DyCokeMethod, grid: tuple[int, int, int]):
        super().__init__(method, grid)
        t, h, w = self.grid
        if t == 1 and method.odd_last_frame == "drop":
            raise CompressionError("dycoke: a single frame has no pair and odd_last_frame='drop' would drop it")
        self.n_keep = method.n_keep(t, h * w)
        self.pending: list[torch.Tensor] = []  # per layer, frames not yet in a complete window
        self.done = 0  # frames pruned so far
        self.kept: list[tuple[torch.Tensor, list[torch.Tensor]]] = []

    def _take(self, start: int, layers: list[torch.Tensor]) -> None:
        t, h, w = self.grid
        flats = [x.reshape(x.shape[0], h * w, -1) for x in layers]
        self.pending = flats if not self.pending else [torch.cat([p, f]) for p, f in zip(self.pending, flats)]
        ready = self.pending[0].shape[0] if start + layers[0].shape[0] == t else self.pending[0].shape[0] // 4 * 4
        if ready:
            self._prune([p[:ready] for p in self.pending])
            self.pending = [p[ready:] for p in self.pending] if ready < self.pending[0].shape[0] else []

    def _prune(self, block: list[torch.Tensor]) -> None:
        t, h, w = self.grid
        n = h * w
        keep = ttm_keep(block[0], self.n_keep, self.method.odd_last_frame, self.done, t)
        local = keep - self.done * n
        self.kept.append((keep, [b.reshape(-1, b.shape[-1]).index_select(0, local) for b in block]))
        self.done += block[0].shape[0]

    def _finish(self, positions, query, question) -> CompressedVideo:
        t, h, w = self.grid
        kept, self.kept = self.kept, []
        keep = torch.cat([k for k, _ in kept])
        layers = [torch.cat([rows[i] for _, rows in kept]) for i in range(len(kept[0][1]))]
        self.method._count(t, h * w, self.n_keep)
        return CompressedVideo(layers[0], positions.reshape(3, -1).index_select(1, keep.to(positions.device)), keep,
                               layers[1:], kept=keep)


# -- decode-time KV pruning (model-free; the stage in models/stages/dycoke.py feeds it) ----------


def decode_attention_row(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
                         scaling: float) -> torch.Tensor:
    """Attention of one new token over all keys, averaged over heads (fp32).

    query : Tensor[B, Hq, 1, d] (post-RoPE); key : Tensor[B, Hkv, K, d] (post-RoPE, full cache);
    mask : None, bool Tensor[B, 1, 1, K] (True = attend) or additive float mask. Returns [B, K].
    The softmax runs over the whole key sequence, as in the official code; grouped heads share
    their key head (same numbers as repeating the KV heads).
    """
    b, hq, _, d = query.shape
    hkv = key.shape[1]
    q = query.float().reshape(b, hkv, hq // hkv, d)
    scores = torch.matmul(q, key.float().transpose(-1, -2)) * scaling  # [B, Hkv, rep, K]
    if mask is not None:
        mask = mask[..., -1, :].reshape(mask.shape[0], 1, 1, -1)  # the new token's row
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.float()
    return scores.softmax(dim=-1).mean(dim=(1, 2))


def prunable_visual(visual: torch.Tensor, exclude_last: bool = True) -> torch.Tensor:
    """Visual positions that decode pruning may drop; the official span misses the last one."""
    if not exclude_last:
        return visual.clone()
    length = visual.shape[-1]
    last = torch.where(visual, torch.arange(length, device=visual.device), -1).amax(-1)  # -1: no visual
    drop = torch.zeros_like(visual)
    rows = (last >= 0).nonzero().flatten()
    drop[rows, last[rows]] = True
    return visual & ~drop


@dataclass
class DecodeSelection:
    """Per-call, per-row state of DyCoke's dynamic KV pruning.

    prunable : BoolTensor[B, S] over the prompt's key positions. ``step(attention)`` takes the
    new token's head-averaged attention row ``[B, >= S]`` and returns the prompt keys layers
    ``>= L`` may attend to (``[B, S]``, True = attend), or None when nothing is masked in any row.
    """

    prunable: torch.Tensor
    prune_ratio: float
    similarity_threshold: float = 0.9
    reselect: str = "code"
    previous: torch.Tensor | None = None
    selection: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.prunable.sum(-1)
        self.keep_counts = torch.floor(n.to(torch.float64) * (1 - self.prune_ratio)).long()  # int(n_vis * (1 - P))
        self.steps = 0
        # per row: steps whose row was similar to the previous one (kept on device: no sync per step)
        self._similar = torch.zeros(self.prunable.shape[0], dtype=torch.long, device=self.prunable.device)

    @property
    def counts(self) -> dict:
        """Per row: steps that (re-)selected, ran with the full visual KV ("code") or reused ("reuse")."""
        similar = self._similar.tolist()
        return {"steps": self.steps,
                "selected": [self.steps - s for s in similar],
                "full": similar if self.reselect == "code" else [0] * len(similar),
                "reused": similar if self.reselect == "reuse" else [0] * len(similar),
                "prunable": self.prunable.sum(-1).tolist(), "kept": self.keep_counts.tolist()}

    def expand(self, rows: int) -> None:
        """Follow ``generate``'s ``repeat_interleave`` of the batch (num_return_sequences)."""
        have = self.prunable.shape[0]
        if rows == have:
            return
        if rows % have or self.previous is not None:
            raise ValueError(f"dycoke: decode batch {rows} does not extend the prompt batch {have}")
        self.prunable = self.prunable.repeat_interleave(rows // have, 0)
        self.__post_init__()

    def top(self, attention: torch.Tensor) -> torch.Tensor:
        """Non-prunable keys plus, per row, the ``keep_counts`` most attended prunable keys."""
        scores = attention.masked_fill(~self.prunable, float("-inf"))
        order = scores.argsort(dim=-1, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
        return ~self.prunable | (rank < self.keep_counts[:, None])

    def step(self, attention: torch.Tensor) -> torch.Tensor | None:
        length = self.prunable.shape[1]
        row = attention[:, :length].float() * self.prunable  # the visual slice (zeros elsewhere)
        if self.previous is None:  # first step of the sample: always select
            similar = torch.zeros(row.shape[0], dtype=torch.bool, device=row.device)
        else:
            similar = cosine(row, self.previous) >= self.similarity_threshold
        self.previous = row  # the official code updates it on every step
        fresh = self.top(row)
        if self.reselect == "code":  # official: a similar step runs with the full visual KV
            keep = fresh | similar[:, None]
        elif self.selection is None:
            keep = fresh
        else:
            keep = torch.where(similar[:, None], self.selection, fresh)
        self.selection = keep
        self.steps += 1
        self._similar += similar
        return None if bool(keep.all()) else keep
