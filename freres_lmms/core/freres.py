"""``freres``: Fre-Res, spatial anchors plus temporal 1D-DCT of latent residuals (training-free default).

Two branches over one video's token grid ``features [T, H, W, D]``:

1. **Raw anchors.** ``A = min(anchors, T)`` evenly spaced latent frames keep ``r`` tokens each,
   dropping the lowest-energy token(s) of every ``block x block`` block
   (``core.blocks.keep_by_blocks``; 3x3 blocks on 24x24 keep 512 of 576 at most).
2. **Fre-Res (temporal frequency).** I-frames are the anchors, frame 0, and every frame whose
   cosine distance to the previous one exceeds ``tau`` (an event); each frame's residual is taken
   against its nearest preceding I-frame (zero on I-frames). Residuals are average-pooled onto a
   ``pool x pool`` grid of cells (capped at the grid's sides), the clip is split into ``G``
   contiguous temporal groups of two P-frames or more, and the orthonormal type-II DCT along time
   of each group's residual trajectory keeps its first ``K`` coefficients, ``K`` at most the
   group's P-frames (with ``group_span=g`` instead one group per anchor: a window of the ``g``
   anchor intervals after it, whose residuals are taken against the anchor, our reading of the
   paper's Table 5): ``G * K * cells`` candidate P-tokens. Candidates whose energy (L2 norm) is
   zero or below ``energy_floor`` times the largest, or beyond the count of non-zero residuals of
   their group and cell, are dropped. Each group also emits a **summary** (the spatial mean of its
   retained DC coefficients), and the clip up to ``statics`` **static background** tokens: among
   the grid positions no emitted anchor keeps, those that change least between consecutive
   anchors, as their mean over the anchors.
3. **Spatial-Guided Absorber** (``mode="absorber"``): each kept anchor token attends, by scaled
   dot product, to the retained P-tokens of its own cell and temporal group and adds the result
   (a motion-aware dynamic anchor). The training-free absorber has no parameters: identity
   projections, zero type embeddings and unit branch gates, so it is dimensionally sound but not
   aligned to the LLM's embedding manifold as the paper's trained one is.

Ablations (``mode``): ``anchor_only``, ``temporal_only``, ``linear_concat`` (P-tokens appended,
no absorber), ``idct_reconstruction`` (each P-frame's pooled residual rebuilt from the retained
coefficients by the inverse DCT and appended, one token per P-frame and cell, instead of the
coefficients; budget: those ``P * cells`` tokens take the place of ``G * K * cells``) and
``absorber``.

Budget rule (``plan``; paper appendix F.1, our choices in docs/methods.md): the temporal branch
reserves its tokens within ``temporal_share`` of the budget (K down to 1, then fewer statics, then
fewer and longer groups, else off); the anchors take the rest as ``r = floor(room / A)``, capped at
the block-pruning count, and fewer anchors only where ``r`` would fall below
``min_tokens_per_anchor``; then ``K = min(floor(B_fre / (G * cells)), L_eff, max_coefficients)``
from what the anchors leave. With no P-frames (``A >= T``), no group of two P-frames, or no room,
the temporal branch is off and its tokens go to the anchors (``last_counts["plan"]["temporal_off"]``
says why; ``temporal_only`` refuses). The method never emits more than ``B`` tokens, nor a token
that is zero or equal to another in features and position; ``last_counts`` reports what each
branch emitted. Without a budget the knobs set the counts, unless they would exceed the video's
own size, which then is the budget.

Positions (``core.base`` rule): kept anchor tokens keep theirs; a P-token and a summary sit at
the floor of the mean position of their region (the group's frames x the cell, or the whole
group), so at their group's temporal centre and their cell's spatial centre; a static token at
the mean over the anchor frames of its grid position. Slots follow the same rule on grid indices.

Everything is batched tensor code: pooling, residuals, the per-group DCT and the absorber are a
few matrix products over the whole clip; there is no Python loop over frames, groups or tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from .base import CompressedVideo, CompressionError, Method, TokenStream, VideoTokens, compress_whole
from .blocks import keep_by_blocks
from .budget import budget_tokens
from .dct import dct_basis
from .freres_fusion import FreResFusion

MODES = ("absorber", "linear_concat", "anchor_only", "temporal_only", "idct_reconstruction")


@lru_cache(maxsize=64)
def evenly_spaced(count: int, length: int, device=None) -> torch.Tensor:
    """``count`` distinct indices spread over ``range(length)``, first and last included."""
    return torch.linspace(0, length - 1, count, dtype=torch.float64, device=device).round().long().unique()


def cell_weights(h: int, w: int, pool: int | tuple[int, int], device=None) -> torch.Tensor:
    """(weights [cells, H*W], cell of each grid token [H*W]): row ``c`` of ``weights`` averages the
    tokens of cell ``c``. ``pool`` is the side of the cell grid (or its rows and columns); cells
    split the token grid as evenly as integers allow."""
    rows_per, cols_per = (pool, pool) if isinstance(pool, int) else pool
    rows = torch.arange(h, device=device) * rows_per // h
    cols = torch.arange(w, device=device) * cols_per // w
    cell = (rows[:, None] * cols_per + cols[None, :]).flatten()  # [HW]
    member = torch.nn.functional.one_hot(cell, rows_per * cols_per).T.float()  # [C, HW]
    return member / member.sum(1, keepdim=True), cell


def group_layout(t: int, groups: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous temporal groups: group id of each frame [T] and each group's length [G]."""
    group = torch.arange(t, device=device) * groups // t
    return group, torch.bincount(group, minlength=groups)


def grouped_dct_basis(lengths: torch.Tensor, k: int, device=None) -> torch.Tensor:
    """[G, K, Lmax]: the first ``k`` rows of each group's own orthonormal DCT-II basis, zero-padded.

    Groups have at most two lengths (floor and ceil of T/G), so two bases cover every group."""
    longest = int(lengths.max())
    out = torch.zeros(len(lengths), k, longest, device=device)
    for n in lengths.unique().tolist():  # at most two distinct lengths
        out[lengths == n, :, :n] = dct_basis(n, device)[:k]
    return out


def window_layout(t: int, groups: int, span: int, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One temporal group per anchor: a window of the ``span`` frames after each of ``groups``
    evenly spaced home frames, whose residuals are taken against the frame before the window (its
    anchor; shifted left at the clip's end so every window has ``span`` frames; windows overlap
    when ``span`` exceeds the anchor interval). Returns each window's first frame [G] (its
    reference is the frame before), each window's length [G], and each frame's own group [T]
    (the last home at or before it: an anchor absorbs from the window that follows it)."""
    homes = evenly_spaced(groups, t, device)
    starts = (homes + 1).clamp(max=t - span)
    frame_group = torch.searchsorted(homes, torch.arange(t, device=device), right=True) - 1
    return starts, torch.full((groups,), span, device=device), frame_group


@lru_cache(maxsize=256)
def p_frame_groups(t: int, backbone: int, groups: int) -> tuple[int, int]:
    """Contiguous groups of a clip whose ``backbone`` evenly spaced frames are I-frames: the most
    groups, at most ``groups``, that leave every group two P-frames or more, and the fewest P-frames
    a group then has (its effective length: I-frames have no residual). (0, 0) when none do."""
    is_p = torch.ones(t)
    is_p[evenly_spaced(backbone, t)] = 0.0
    for count in range(min(groups, int(is_p.sum()) // 2), 0, -1):  # shape only, cached: a few tries
        fewest = int(torch.bincount(group_layout(t, count)[0], weights=is_p, minlength=count).min())
        if fewest >= 2:
            return count, fewest
    return 0, 0


@lru_cache(maxsize=32)
def temporal_layout(t: int, h: int, w: int, groups: int, k: int, pool: tuple[int, int], device: torch.device,
                    span: int | None = None) -> dict:
    """Everything of the temporal branch that depends only on the shapes, built once per shape.

    Groups are ``groups`` contiguous parts of the clip, or with ``span`` one window of ``span``
    frames per anchor (``window_layout``).
    ``weights``/``cell_of``: the pooling cells; ``group``: each frame's (own) group; ``basis`` [G, K, T]:
    each group's DCT rows placed on its frames; ``group_mean`` [G, T] and ``cell_mean`` [C, HW]:
    the float64 averages behind region positions; ``grid_idx`` [3, T, HW]: grid coordinates, and
    their region means (``region_idx`` [3, G, C], ``summary_idx`` [3, G], ``frame_idx`` [3, T, C]),
    from which the slots of synthesized tokens come."""
    weights, cell_of = cell_weights(h, w, pool, device)
    frame = torch.arange(t, device=device)
    if span is None:
        group, lengths = group_layout(t, groups, device)
        starts = torch.cumsum(lengths, 0) - lengths
        members = torch.zeros(groups, int(lengths.max()), t, device=device)
        members[group, frame - starts[group], frame] = 1.0  # [G, Lmax, T]
    else:
        starts, lengths, group = window_layout(t, groups, span, device)
        step = torch.arange(span, device=device)
        members = torch.zeros(groups, span, t, device=device)
        members[torch.arange(groups, device=device)[:, None], step, starts[:, None] + step] = 1.0
    membership = members.sum(1)  # [G, T]
    grid_idx = torch.stack(torch.meshgrid(frame, torch.arange(h, device=device), torch.arange(w, device=device),
                                          indexing="ij")).reshape(3, t, h * w).double()
    group_mean, cell_mean = (membership / membership.sum(1, keepdim=True)).double(), weights.double()
    frame_idx = grid_idx @ cell_mean.T  # [3, T, C]
    # contiguous groups contract residuals with a frame-indexed basis; windows, whose residuals
    # depend on the window, with one window-length basis
    dct = {"basis": grouped_dct_basis(lengths, k, device) @ members} if span is None else \
        {"window_frames": starts[:, None] + step, "window_basis": dct_basis(span, device)[:k]}
    return {**dct, "weights": weights, "cell_of": cell_of, "group": group,
            "group_mean": group_mean, "cell_mean": cell_mean, "grid_idx": grid_idx, "frame_idx": frame_idx,
            "region_idx": group_mean @ frame_idx, "summary_idx": (group_mean @ grid_idx.mean(2).unsqueeze(-1))[..., 0]}


@dataclass
class FreResMethod(Method):
    """Fre-Res: raw anchors + temporal-frequency residual tokens (+ absorber).

    Parameters
    ----------
    anchors : int
        Anchor frames ``A`` (evenly spaced latent frames; ``min(A, T)`` on a ``T``-slice clip).
        They are also the I-frame backbone of the temporal branch.
    tokens_per_anchor : int or None
        Raw tokens ``r`` kept per anchor at most; None: all but one token per block.
    min_tokens_per_anchor : int or None
        Floor of ``r`` under a budget: below it the budget takes fewer anchors instead of fewer
        tokens per anchor. None: a quarter of the grid (``H*W // 4``).
    block : int
        Block size of the anchor pruning.
    groups : int
        Temporal groups ``G`` (contiguous; at most ``T // 2``, so every group has two frames).
    group_span : int or None
        The grouping scale ``g`` of the paper's Table 5, in our reading: one temporal group per
        anchor (``G = A``, ``groups`` is then unused), each a window of ``round(g * T / A)``
        frames from its anchor, i.e. ``g`` anchor intervals (windows overlap for ``g > 1``).
        None: ``groups`` contiguous groups.
    coefficients : int
        ``K`` without a budget (capped at the shortest group's length).
    max_coefficients : int
        ``K_max`` of the budget rule.
    pool : int
        Side ``s`` of the spatial pooling grid (``s * s`` cells; capped at the token grid's sides).
    statics : int
        Static background tokens at most.
    temporal_share : float
        Under a budget, the most of it the temporal branch (P-tokens, summaries, statics) may
        reserve before the anchors are sized; the anchors take the rest (and leave K to the rule).
    tau : float
        Cosine distance (of pooled latent frames) above which a frame becomes an event I-frame.
    energy_floor : float
        Candidates whose energy is below this fraction of the largest are dropped as near-zero.
    mode : str
        ``absorber`` (default), ``linear_concat``, ``anchor_only``, ``temporal_only`` or
        ``idct_reconstruction``.
    budget : int, float or None
        Visual-token budget (count or ratio); None: the knobs alone set the counts.
    adapter : str or None
        Directory of a trained ``FreResFusion`` (``save_pretrained``); None: the training-free
        default (identity adapters and projections, zero type embeddings, unit gates).
    """

    name = "freres"
    anchors: int = 8
    tokens_per_anchor: int | None = None
    min_tokens_per_anchor: int | None = None
    block: int = 3
    groups: int = 8
    group_span: int | None = None
    coefficients: int = 3
    max_coefficients: int = 8
    pool: int = 4
    statics: int = 24
    temporal_share: float = 0.1
    tau: float = 0.3
    energy_floor: float = 0.05
    mode: str = "absorber"
    budget: int | float | None = None
    adapter: str | None = None
    last_counts: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    fusion: FreResFusion | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for knob in ("anchors", "block", "groups", "coefficients", "max_coefficients", "pool"):
            value = getattr(self, knob)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CompressionError(f"freres: {knob} must be a positive int, got {value!r}")
        for knob in ("tokens_per_anchor", "min_tokens_per_anchor", "group_span"):
            value = getattr(self, knob)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise CompressionError(f"freres: {knob} must be a positive int or None, got {value!r}")
        if isinstance(self.statics, bool) or not isinstance(self.statics, int) or self.statics < 0:
            raise CompressionError(f"freres: statics must be a non-negative int, got {self.statics!r}")
        if self.mode not in MODES:
            raise CompressionError(f"freres: mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode == "idct_reconstruction" and self.group_span is not None:
            raise CompressionError("freres: idct_reconstruction rebuilds each P-frame once, which overlapping "
                                   "group_span windows do not define; use groups instead")
        for knob, low_open in (("energy_floor", False), ("temporal_share", True)):
            value = getattr(self, knob)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    (0.0 < value if low_open else 0.0 <= value) and value < 1.0):
                raise CompressionError(f"freres: {knob} must lie in {'(0' if low_open else '[0'}, 1), got {value!r}")
        budget_tokens(self.budget, 1)  # type and sign check only (the size is known per video)
        if self.adapter is not None:
            self.fusion = FreResFusion.from_pretrained(self.adapter)

    # -- the budget rule ------------------------------------------------------------------------
    def _temporal_shape(self, t: int, backbone: int, most: int | None = None) -> tuple[int, int | None, int, str | None]:
        """(groups, window span or None, effective length of the shortest group, why the branch is off).

        The effective length counts the frames with a residual (I-frames have none): it caps K,
        except for the iDCT ablation, whose reconstruction takes every coefficient a group has."""
        if self.mode == "anchor_only":
            return 0, None, 0, "mode anchor_only"
        if self.group_span is not None:  # one window per anchor, g anchor intervals long
            span = min(t - 1, round(self.group_span * t / backbone))
            if span < 2:
                return 0, None, 0, f"a {t}-slice clip gives windows of {max(span, 0)} P-frame (a DCT needs 2)"
            return backbone, span, span, None
        if backbone >= t:
            return 0, None, 0, f"the {backbone} anchors (I-frames) cover all {t} slices: no P-frame has a residual"
        groups, fewest = p_frame_groups(t, backbone, most or self.groups)
        if not groups:
            return 0, None, 0, f"{t - backbone} P-frame(s) of {t} slices: no group of two P-frames (a DCT needs 2)"
        return groups, None, t // groups if self.mode == "idct_reconstruction" else fewest, None

    def plan(self, t: int, h: int, w: int) -> dict:
        """Counts per branch for a ``T x H x W`` grid: anchors, tokens per anchor, groups, K, cells, statics.

        The rule (docs/methods.md, "Fre-Res"): the temporal branch reserves its tokens within
        ``temporal_share`` of the budget (K down to 1, then fewer statics, then fewer, longer
        groups, else off); the anchors take the rest, ``A = min(anchors, T)`` and
        ``r = floor(room / A)`` capped at the block-pruning count, with fewer anchors only where
        ``r`` would fall below ``min_tokens_per_anchor``; then ``K = min(floor(B_fre / (G S)),
        L_eff, K_max)`` from what the anchors leave (paper appendix F.1). With no P-frames, no
        two-frame group or no room, the temporal branch is off and its tokens go to the anchors.
        """
        hw = h * w
        raw_on = self.mode != "temporal_only"
        idct = self.mode == "idct_reconstruction"
        pool = (min(self.pool, h), min(self.pool, w))
        cells = pool[0] * pool[1]
        r_max = self.tokens_per_anchor
        if r_max is None:  # all but the weakest token of each block
            r_max = hw - math.ceil(h / self.block) * math.ceil(w / self.block) if hw > 1 else 1
        if r_max > hw:
            raise CompressionError(f"freres: tokens_per_anchor {r_max} exceeds the {h}x{w} grid")
        r_floor = min(r_max, self.min_tokens_per_anchor or max(1, hw // 4))
        backbone = min(self.anchors, t)  # the evenly spaced I-frames; emitted unless temporal_only
        anchors = backbone if raw_on else 0
        groups, span, length, off = self._temporal_shape(t, backbone)
        k = min(self.coefficients, length)
        statics = min(self.statics, hw) if groups and backbone >= 2 else 0  # a mean over 2+ anchors

        def request(g, kk, s):  # the temporal branch's tokens at most
            return g + s + (t * cells if idct else g * kk * cells)

        total = None
        if self.budget is not None:
            total = budget_tokens(self.budget, t * hw)
        elif anchors * r_max + (request(groups, k, statics) if groups else 0) > t * hw:
            total = t * hw  # never more tokens than the video had: the budget rule at full size
        r = r_max
        if total is not None:
            if groups:
                # what the branch may reserve: all of it alone, room for one anchor token with the
                # iDCT ablation (its rebuilt residuals are the point of that row), else a share
                cap = total if not raw_on else total - 1 if idct else math.floor(self.temporal_share * total)
                if request(groups, k, statics) > cap and not idct:
                    k = max(1, min(k, (cap - groups - statics) // (groups * cells)))
                if request(groups, k, statics) > cap:
                    statics = max(0, min(statics, cap - request(groups, k, 0)))
                if request(groups, k, statics) > cap and span is None and not idct:
                    fewer = min(groups, cap // (cells + 1))  # fewer, longer groups: one coefficient each
                    groups, _, length, _ = self._temporal_shape(t, backbone, fewer) if fewer else (0, None, 0, None)
                if not groups or request(groups, k, statics) > cap:
                    off = (f"budget {self.budget} ({total} tokens) leaves the temporal branch {cap}, "
                           f"below its minimum {request(1 if span is None else backbone, 1, 0)}")
                    groups, k, statics = 0, 0, 0
            room = total - (request(groups, k, statics) if groups else 0)  # at least 1: the cap leaves it
            if raw_on:
                r = min(r_max, room // anchors)
                if r < r_floor:  # fewer anchors rather than anchors too sparse to read
                    anchors = max(1, min(anchors, room // r_floor))
                    r = min(r_max, room // anchors)
                    statics = statics if anchors >= 2 else 0  # a mean over one anchor is its copy
            if groups and not idct:  # the paper's K from what the anchors leave
                spare = total - anchors * r - groups - statics
                k = min(spare // (groups * cells), length, self.max_coefficients)
        if not groups:
            if off and not raw_on:
                raise CompressionError(f"freres: temporal_only has nothing to emit: {off}")
            k, statics, span = 0, 0, None
        return {"anchors": anchors, "tokens_per_anchor": r, "groups": groups, "coefficients": k,
                "cells": cells, "pool": pool, "statics": statics, "span": span, "backbone": backbone,
                "temporal_off": off if not groups else None}

    # -- the method -------------------------------------------------------------------------------
    def compress(self, video: VideoTokens) -> CompressedVideo:
        return compress_whole(self.stream(video.grid), video)

    def stream(self, grid: tuple[int, int, int]) -> FreResStream:
        """Online: a chunk leaves its anchor slices and its pooled cells, nothing else."""
        return FreResStream(self, grid)

    def _emit(self, grid: tuple[int, int, int], plan: dict, anchor_frames: torch.Tensor, anchor_layers: list[torch.Tensor],
              pooled: list[torch.Tensor] | None, positions: torch.Tensor) -> CompressedVideo:
        """The tokens from what the stream kept: every layer's anchor slices ``[A, HW, D]`` and, with
        a temporal branch, every slice's pooled cells ``[T, C, D]`` (all the clip's frames enter only
        through them)."""
        t, h, w = grid
        device = anchor_layers[0].device
        hw = h * w
        # float64: a floor of a mean must not fall one short through rounding
        grid_pos = positions.reshape(3, t, hw).double()
        parts = []  # (features per layer [N, D], positions [3, N], slots [N], kind) per branch
        fusion = self.fusion
        if fusion is not None:  # its own dtype (trained in float32); features cast in and back out
            fusion.check(anchor_layers[0].shape[-1])
            fusion.to(device=device)

        # temporal_only still takes the backbone's frames as I-frames and for the statics
        anchor_grid = anchor_layers[0]  # [A, HW, D]: anchor energy and statics
        unseen = None  # grid positions that no emitted anchor shows: where statics may go
        if plan["anchors"]:  # launched before the temporal branch's one host sync, so they overlap it
            energy = torch.linalg.vector_norm(anchor_grid, dim=-1, dtype=torch.float32)
            kept = keep_by_blocks(energy.view(-1, h, w), plan["tokens_per_anchor"], self.block).view(len(anchor_frames), hw)
            unseen = ~kept.any(0)
            # exactly r per anchor: the kept grid indices in order, without a data-dependent nonzero
            token_of = kept.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :plan["tokens_per_anchor"]]
            token_of = token_of.sort(dim=1).values
            flat_index = (anchor_frames[:, None] * hw + token_of).flatten()
            local_index = (torch.arange(len(anchor_frames), device=device)[:, None] * hw + token_of).flatten()
            rows = [a.reshape(-1, a.shape[-1]).index_select(0, local_index) for a in anchor_layers]  # one gather per layer
        if plan["groups"]:
            layout = temporal_layout(t, h, w, plan["groups"], plan["coefficients"], plan["pool"], device, plan["span"])
            temporal = self._temporal(pooled, anchor_frames, anchor_layers, unseen, plan, grid_pos, layout, h, w)
        if plan["anchors"]:
            if self.mode == "absorber" and plan["groups"]:
                rows = self._absorb(rows, anchor_frames, token_of, temporal, fusion)
            parts.append((rows, positions.reshape(3, -1)[:, flat_index], flat_index, "raw"))
        if plan["groups"]:
            parts += temporal["parts"]
        if fusion is not None:  # adapters, type embeddings and gates act on the main features
            parts = [([fusion.raw(r[0].to(fusion.gates.dtype)) if kind == "raw" else fusion.fre(r[0].to(fusion.gates.dtype), kind),
                       *r[1:]], pos, slot, kind) for r, pos, slot, kind in parts]
        if not any(p[2].numel() for p in parts):  # only temporal_only can get here: no anchors
            raise CompressionError("freres: temporal_only has nothing to emit: every residual of this clip "
                                   "is zero or below energy_floor (a still scene)")
        features = [torch.cat([p[0][i].to(x.dtype) for p in parts]) for i, x in enumerate(anchor_layers)]
        positions = torch.cat([p[1] for p in parts], 1)
        slots = torch.cat([p[2] for p in parts])
        emitted = {kind: int(slot.numel()) for _, _, slot, kind in parts}
        self.last_counts = {"anchors": emitted.get("raw", 0), "dynamic": emitted.get("dynamic", 0),
                            "summaries": emitted.get("summary", 0), "statics": emitted.get("static", 0),
                            "plan": plan, "total": int(slots.numel())}
        return CompressedVideo(features[0], positions, slots, features[1:])

    def _temporal(self, pooled, anchor_frames, anchor_layers, unseen, plan, grid_pos, layout, h, w) -> dict:
        t = pooled[0].shape[0]
        device = pooled[0].device
        anchor_grid = anchor_layers[0]
        cell_of, group = layout["cell_of"], layout["group"]  # [HW], [T]
        # I-frames: anchors, frame 0 and events (cosine distance of pooled frames above tau; in the
        # features' dtype with float accumulation)
        base = pooled[0].flatten(1)
        norms = torch.linalg.vector_norm(base, dim=1, dtype=torch.float32)
        dots = torch.bmm(base[1:, None, :], base[:-1, :, None]).flatten().float()
        cosine = dots / (norms[1:] * norms[:-1]).clamp_min(1e-12)
        is_i = torch.zeros(t, dtype=torch.bool, device=device)
        if "window_frames" not in layout:  # anchor windows have their own I-frame: their first frame
            is_i[anchor_frames] = True
        is_i[0] = True
        is_i[1:] |= (1 - cosine) > self.tau
        frame = torch.arange(t, device=device)
        reference = torch.cummax(torch.where(is_i, frame, 0), 0).values
        pooled = [p.float() for p in pooled]
        if "window_frames" in layout:
            # one GoP per anchor window: residuals against the frame before it, or a later event
            frames = layout["window_frames"]  # [G, W]
            ref = torch.maximum(reference[frames], frames[:, :1] - 1)
            windows = [p[frames] - p[ref] for p in pooled]  # [G, W, C, D]
            coeffs = [torch.einsum("kw,gwcd->gkcd", layout["window_basis"], r) for r in windows]
            moving = (windows[0].norm(dim=-1) > 0).sum(1)  # [G, C]
        else:
            residuals = [p - p.index_select(0, reference) for p in pooled]  # [T, C, D], zero on I-frames
            # per-group DCT along time: one contraction with the [G, K, T] basis
            coeffs = [torch.einsum("gkt,tcd->gkcd", layout["basis"], r) for r in residuals]  # [G, K, C, D]
            moving = (layout["group_mean"] > 0).float() @ (residuals[0].norm(dim=-1) > 0).float()  # [G, C]
        if plan["statics"]:  # before the host sync below, so these launches overlap the pooling
            # the grid positions that change least between anchors, among those no emitted anchor
            # shows (a static there is never a copy of an emitted token; temporal_only: any)
            change = torch.linalg.vector_norm(anchor_grid[1:] - anchor_grid[:-1], dim=-1, dtype=torch.float32).sum(0)
            if unseen is not None:
                change = change.masked_fill(~unseen, float("inf"))
            order = change.argsort(stable=True)[: plan["statics"]]
            still = order[torch.isfinite(change[order])].sort().values  # [S'] grid positions (one host sync)
            statics = [a.index_select(1, still).float().mean(0) for a in anchor_layers]
            static_pos = grid_pos[:, anchor_frames][:, :, still].mean(1)  # [3, S']
            static_idx = layout["grid_idx"][:, anchor_frames][:, :, still].mean(1)
            static_part = (statics, static_pos.floor().long())
        energy = coeffs[0].norm(dim=-1)  # [G, K, C]
        keep = energy > self.energy_floor * energy.max() if energy.numel() else energy.bool()
        keep &= energy > 0  # a zero coefficient carries nothing
        # a cell whose group has n non-zero residuals has n independent coefficients at most: with one
        # (an event beside it, or a still cell but one frame) each c_k is a multiple of it, and
        # [r, 0] gives c_1 = c_0. The iDCT ablation rebuilds from every retained coefficient.
        retained = keep
        keep = keep & (torch.arange(keep.shape[1], device=device)[None, :, None] < moving[:, None, :])
        g_idx, k_idx, c_idx = keep.nonzero(as_tuple=True)
        # positions and slots: floor of the mean over each region (group frames x cell)
        group_mean, cell_mean = layout["group_mean"], layout["cell_mean"]
        frame_pos = grid_pos @ cell_mean.T  # [3, T, C]: each frame's cell centres
        region_pos = group_mean @ frame_pos  # [3, G, C]
        summary_pos = (group_mean @ grid_pos.mean(2).unsqueeze(-1))[..., 0]  # [3, G]
        region_idx, summary_idx = layout["region_idx"], layout["summary_idx"]

        def slot_of(idx):  # flat grid index of (t, h, w) grid coordinates
            idx = idx.floor().long()
            return (idx[0] * h + idx[1]) * w + idx[2]

        parts = []
        if self.mode == "idct_reconstruction":  # P-frames' pooled residuals from the retained coefficients
            retained = [c * retained[..., None] for c in coeffs]
            p_frames = (~is_i).nonzero().flatten()
            rebuilt = [torch.einsum("gkt,gkcd->tcd", layout["basis"], c)[p_frames].flatten(0, 1) for c in retained]
            nonzero = rebuilt[0].norm(dim=-1) > 0  # a cell whose group kept no coefficient rebuilds to zero
            pos = frame_pos[:, p_frames].flatten(1).floor().long()[:, nonzero]
            parts.append(([r[nonzero] for r in rebuilt], pos,
                          slot_of(layout["frame_idx"][:, p_frames].flatten(1))[nonzero], "dynamic"))
        else:
            dynamic = [c[g_idx, k_idx, c_idx] for c in coeffs]
            parts.append((dynamic, region_pos[:, g_idx, c_idx].floor().long(), slot_of(region_idx[:, g_idx, c_idx]), "dynamic"))
        # summary: the spatial mean of the group's retained DC coefficients (its pooled mean residual);
        # the mean over frequencies would cancel (a two-frame group from an I-frame has c1 = -c0), and a
        # group with fewer than two retained cells would repeat its P-token, so it has no summary
        dc_keep = keep[:, 0].float()  # [G, C]
        has_summary = dc_keep.sum(1) >= 2
        share = dc_keep / dc_keep.sum(1, keepdim=True).clamp_min(1.0)
        summaries = [torch.einsum("gc,gcd->gd", share, c[:, 0])[has_summary] for c in coeffs]
        parts.append((summaries, summary_pos.floor().long()[:, has_summary], slot_of(summary_idx)[has_summary], "summary"))
        if plan["statics"]:
            parts.append(static_part + (slot_of(static_idx), "static"))
        return {"parts": parts, "coeffs": coeffs, "keep": keep, "group": group, "cell_of": cell_of}

    def _absorb(self, rows, anchor_frames, tokens, temporal, fusion=None):
        """Each anchor token attends to the retained P-tokens of its own (group, cell): K at most.

        ``rows`` [A*r, D] per layer, anchor-major; ``tokens`` [A, r] their grid indices. Scores
        against every (k, cell) of the anchor's group are one batched product; a mask keeps the
        token's own cell and the retained coefficients. A trained ``fusion`` projects the main
        features' queries, keys and values; DeepStack rows take the same attention weights.
        """
        coeffs, keep = temporal["coeffs"], temporal["keep"]  # [G, K, C, D], [G, K, C]
        group = temporal["group"][anchor_frames]  # [A]
        n_anchor, per_anchor = tokens.shape
        cells = keep.shape[2]
        dtype = rows[0].dtype  # bf16 products on the GPU (fp32 accumulation), fp32 on the CPU
        query = rows[0].view(n_anchor, per_anchor, -1)
        keys = [c[group].flatten(1, 2).to(dtype) for c in coeffs]  # [A, K*C, D]
        key = keys[0]
        if fusion is not None:  # in the fusion's dtype, back to the features'
            own = fusion.gates.dtype
            query, key, keys[0] = (layer(x.to(own)).to(dtype) for layer, x in
                                   ((fusion.query, query), (fusion.key, keys[0]), (fusion.value, keys[0])))
        scores = torch.bmm(query, key.transpose(1, 2)).float() / math.sqrt(query.shape[-1])  # [A, r, K*C]
        own_cell = temporal["cell_of"][tokens][..., None] == torch.arange(cells, device=tokens.device)  # [A, r, C]
        allowed = own_cell[:, :, None, :] & keep[group][:, None]  # [A, r, K, C]
        scores = scores.masked_fill(~allowed.flatten(2), float("-inf"))
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # tokens with no candidate absorb nothing
        return [(r.view(n_anchor, per_anchor, -1) + torch.bmm(weights.to(dtype), kk)).flatten(0, 1) for r, kk in zip(rows, keys)]


class FreResStream(TokenStream):
    """Fre-Res online: of each chunk it keeps the anchor slices (every layer) and, when the temporal
    branch is on, every slice's pooled cells; the rest of the chunk is not held. Everything Fre-Res
    computes from the other frames (events, residuals, the DCT) reads the pooled cells only."""

    def __init__(self, method: FreResMethod, grid: tuple[int, int, int]):
        super().__init__(method, grid)
        t, h, w = self.grid
        self.plan = method.plan(t, h, w)
        self.anchor_frames = evenly_spaced(self.plan["anchors"] or self.plan["backbone"], t)
        self.anchor_layers: list[torch.Tensor] = []
        self.pooled: list[torch.Tensor] | None = None
        self.weights = None

    def _take(self, start: int, layers: list[torch.Tensor]) -> None:
        t, h, w = self.grid
        chunk = layers[0].shape[0]
        device = layers[0].device
        flats = [x.reshape(chunk, h * w, -1) for x in layers]
        inside = ((self.anchor_frames >= start) & (self.anchor_frames < start + chunk)).nonzero().flatten()
        if inside.numel():
            local = (self.anchor_frames[inside] - start).to(device)
            if not self.anchor_layers:
                self.anchor_layers = [f.new_empty((len(self.anchor_frames), *f.shape[1:])) for f in flats]
            for buffer, f in zip(self.anchor_layers, flats):
                buffer[inside.to(device)] = f.index_select(0, local)
        if self.plan["groups"]:
            if self.weights is None:
                plan = self.plan
                self.weights = temporal_layout(t, h, w, plan["groups"], plan["coefficients"], plan["pool"], device,
                                               plan["span"])["weights"]
                self.pooled = [f.new_empty((t, self.weights.shape[0], f.shape[-1])) for f in flats]
            for buffer, f in zip(self.pooled, flats):
                buffer[start:start + chunk] = torch.matmul(self.weights.to(f.dtype), f)  # [t, C, D]

    def _finish(self, positions, query, question) -> CompressedVideo:
        anchor_layers, pooled = self.anchor_layers, self.pooled
        self.anchor_layers, self.pooled = [], None
        return self.method._emit(self.grid, self.plan, self.anchor_frames.to(positions.device), anchor_layers, pooled,
                                 positions)
