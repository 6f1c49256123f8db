"""``adaretake``: AdaReTaKe (ACL 2025), chunked prefill with temporal- and layer-adaptive KV top-k.

AdaReTaKe drops no token before the LLM. Every visual token enters prefill, chunk by chunk, and
each chunk's KV cache is cut to a top-k per layer before the next chunk comes (the LLM side lives
in ``freres_lmms.models.stages.adaretake``). This module holds the model-free algorithm, written
from the current official code (``iLearn-Lab/ACL25-AdaReTaKe`` @ 39223a6) as methods.md §4 reads it:

1. **Chunks.** A chunk is ``chunk_frames`` raw frames, i.e. ``chunk_frames // 2`` temporal slices
   (Qwen's temporal patch is 2 frames). The official ``get_chunk_size`` uses
   ``min(chunk_frames, T_slices)`` slices-or-frames, so a clip with fewer than ``chunk_frames``
   slices is cut in two halves. We do not reproduce that quirk: such a clip is one chunk.
2. **Global ratio.** ``alpha = min(1, max_input_length / input length)`` (text + video), official
   ``dynamic_compression_ratio``. Or a ``budget`` (below) that sets the number directly.
3. **Temporal-adaptive chunk ratios** (``temporal_ratios``). ``chunk_mean`` is the official rule
   ("Eq. 9"): chunk-mean embedding, cosine distance to the neighbouring chunks (ends padded by
   repetition), ``alpha * d_c / mean(d)``, projected by bisection onto
   ``{alpha_c in [1e-3, 1], sum = alpha * C}``. ``adjacent_frames`` is the paper's token-wise
   distance: each slice's mean over token positions of ``1 - cos(f_t, f_{t-1})`` (slice 0 takes
   slice 1's value), averaged over the chunk's slices, then the same normalisation and projection.
   ``off``: every chunk gets ``alpha``.
4. **Scores** (``chunk_scores``): the guide prompt's post-RoPE queries against the chunk's video
   keys, fp32 softmax over the chunk's keys only, summed over prompt queries, mean over heads.
5. **Layer-adaptive allocation** (``layer_allocation``): official ``adakv`` (global top-B over the
   concatenated layer scores, ``alpha_l = L alpha_c (n_l + 1) / sum(n + 1)``), ``even``, or the
   paper's heavy-hitter count (``|{s > p max s}|`` with constant ``p = 0.01``, weight floor 0.01).
6. **Per-layer top-k** (``keep_counts``, ``topk_keep``): ``max(1, floor(max(0.01, alpha_l) Lc))``
   highest-scored video keys per layer, in original order.

Budget (exact, ``exact_budget=True``, the deviation methods.md §4d allows). The official floors
lose up to one entry per chunk and layer, and the ``+1`` / 0.01 floors can push a layer past
its share. We instead hand out integers by largest remainder twice: the video target
``B = sum_c B_c`` over chunks (``B_c`` in ``[1, L_c]``, proportional to ``alpha_c L_c``), then each
chunk's ``B_c * L`` entries over layers (each in ``[1, L_c]``, proportional to ``alpha_l L_c``). The
stored visual KV, averaged over layers, is then exactly ``B``. The projection weighs chunks by
their length, so a short last chunk does not take a full chunk's share (equal chunks: official).
``exact_budget=False`` keeps the official floors (within about one entry per chunk of ``B``).

Budget knobs. ``budget=None`` (default): ``B = min(floor(alpha * V), max_input_length - text)``
for ``V`` video tokens. The second term is ours: with the official ``alpha`` the stored length
``text + alpha V`` exceeds ``max_input_length`` by ``text (1 - alpha)``, and we keep it within.
``budget`` int: ``B`` = that many visual KV entries (mean over layers); float in (0, 1]: that
fraction of ``V`` (``core.budget``). A budget overrides ``max_input_length``. A target at or
above ``V`` keeps everything (the stage then equals the ``full`` method). A target below one entry
per chunk cannot be met (every layer keeps at least one key per chunk) and is an error.

First-chunk scores. Both official code generations seem to leak the text prefix's scores into
the first video chunk's allocation, which leaves chunk 1 almost uncompressed (methods.md §4g, a
code reading that was not verified by running the official code). ``clear_first_chunk_scores=True``
(default) is the paper's behaviour: chunk 1 is compressed like every other. ``False``
approximates the leak by storing chunk 1 whole (the total then exceeds the target by what
chunk 1 would have dropped).

Not implemented: position reforge (``pos_embed_reforge``, off in the official MLVU and
LongVideoBench configs) and the YaRN factor-4 rope scaling that goes with it in the official
configs; kept keys keep their stock M-RoPE positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .base import CompressedVideo, CompressionError, Method, VideoTokens, gather_tokens
from .budget import budget_tokens

TEMPORAL_RULES = ("chunk_mean", "adjacent_frames", "off")
LAYER_RULES = ("adakv", "even", "heavy_hitter")
RATIO_BOUNDS = (1e-3, 1.0)  # official bisection_projection bounds
MIN_LAYER_RATIO = 0.01  # official floor of a layer's keep ratio
HEAVY_HITTER_P = 0.01  # official heavy-hitter threshold (fraction of the layer's top score)
TEMPORAL_PATCH = 2  # raw frames per Qwen temporal slice


# -- chunks and temporal allocation ---------------------------------------------------------------
def chunk_bounds(num_slices: int, slices_per_chunk: int) -> torch.Tensor:
    """Slice boundaries ``[C + 1]``: chunk ``c`` holds slices ``bounds[c]:bounds[c + 1]``."""
    if num_slices < 1 or slices_per_chunk < 1:
        raise CompressionError(f"need at least one slice and one slice per chunk, got {num_slices}, {slices_per_chunk}")
    starts = torch.arange(0, num_slices, slices_per_chunk)
    return torch.cat([starts, torch.tensor([num_slices])])


def _chunk_ids(bounds: torch.Tensor, device) -> torch.Tensor:
    """Chunk index of every slice ``[T]``."""
    sizes = bounds.diff().to(device)
    return torch.repeat_interleave(torch.arange(sizes.numel(), device=device), sizes)


def _chunk_mean(values: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """Mean over each chunk's slices of ``values [T, ...]`` -> ``[C, ...]``."""
    ids = _chunk_ids(bounds, values.device)
    sums = torch.zeros((bounds.numel() - 1, *values.shape[1:]), dtype=values.dtype, device=values.device)
    sums.index_add_(0, ids, values)
    sizes = bounds.diff().to(values.device, values.dtype)
    return sums / sizes.view(-1, *([1] * (values.ndim - 1)))


def slice_means(features: torch.Tensor) -> torch.Tensor:
    """Mean embedding of each temporal slice, fp32: ``[T, ..., D] -> [T, D]`` (``[T, D]`` passes through).

    Accumulates in fp32 without an fp32 copy of the clip."""
    if features.ndim == 2:
        return features.float()
    flat = features.reshape(features.shape[0], -1, features.shape[-1])
    return flat.sum(1, dtype=torch.float32) / flat.shape[1]


def _cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1.0 - torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-8)


def adjacent_frame_distances(features: torch.Tensor, block_bytes: int = 1 << 28) -> torch.Tensor:
    """Per slice ``t >= 1``: mean over token positions of ``1 - cos(f_{t,n}, f_{t-1,n})``; slice 0
    repeats slice 1 (0 for a single slice). ``features [T, ..., D]`` -> ``[T]`` fp32.

    fp32 in blocks of slices, so a long bf16 clip is never upcast whole.
    """
    t = features.shape[0]
    flat = features.reshape(t, -1, features.shape[-1])
    if t == 1:
        return torch.zeros(1, dtype=torch.float32, device=features.device)
    step = max(1, block_bytes // max(1, 4 * flat[0].numel()))
    parts = []
    for lo in range(1, t, step):  # blocks of slices, not a per-frame loop
        hi = min(t, lo + step)
        parts.append(_cosine_distance(flat[lo:hi].float(), flat[lo - 1:hi - 1].float()).mean(-1))
    dist = torch.cat(parts)
    return torch.cat([dist[:1], dist])


def temporal_distances(features: torch.Tensor, bounds: torch.Tensor, rule: str = "chunk_mean") -> torch.Tensor:
    """Per-chunk temporal distance ``d [C]`` (fp32) under ``rule`` (see the module docstring).

    ``features``: ``[T, H, W, D]``, ``[T, N, D]`` or, for ``chunk_mean`` only, slice means ``[T, D]``.
    """
    if rule == "chunk_mean":
        chunks = _chunk_mean(slice_means(features), bounds)  # [C, D]
        padded = torch.cat([chunks[:1], chunks, chunks[-1:]])
        return 0.5 * (_cosine_distance(chunks, padded[:-2]) + _cosine_distance(chunks, padded[2:]))
    if rule == "adjacent_frames":
        if features.ndim < 3:
            raise CompressionError("adjacent_frames needs token features [T, N, D] or [T, H, W, D], not slice means")
        return _chunk_mean(adjacent_frame_distances(features), bounds)
    raise CompressionError(f"unknown temporal rule {rule!r}; known: {', '.join(TEMPORAL_RULES)}")


def bisection_projection(values: torch.Tensor, total: float, lower: float = RATIO_BOUNDS[0], upper: float = RATIO_BOUNDS[1],
                         weights: torch.Tensor | None = None, iterations: int = 100) -> torch.Tensor:
    """``clip(values - mu, lower, upper)`` with the shift ``mu`` found by bisection so that
    ``sum(weights * result) = total`` (official ``bisection_projection``; weights default to 1).

    Runs the 100 official iterations without the official early stop at ``|error| < 1e-5`` (the
    results differ by less than that), in float64 with no host sync inside the loop. A total outside
    ``[lower, upper] * sum(weights)`` cannot be met; the result is then uniform at ``total / sum(weights)``.
    """
    values = values.double()
    w = torch.ones_like(values) if weights is None else weights.to(values)
    mass = float(w.sum())
    if not lower * mass < total < upper * mass:
        return torch.full_like(values, total / mass)
    lo = (values - upper).min()  # every entry clipped at upper: sum >= total
    hi = (values - lower).max()  # every entry clipped at lower: sum <= total
    for _ in range(iterations):
        mu = 0.5 * (lo + hi)
        above = (w * (values - mu).clamp(lower, upper)).sum() > total
        lo, hi = torch.where(above, mu, lo), torch.where(above, hi, mu)
    return (values - 0.5 * (lo + hi)).clamp(lower, upper)


def temporal_ratios(features: torch.Tensor, bounds: torch.Tensor, alpha: float, rule: str = "chunk_mean",
                    lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Per-chunk keep ratios ``alpha_c [C]`` (float64, on the CPU) with ``sum_c w_c alpha_c = alpha sum_c w_c``.

    ``lengths`` (tokens per chunk) sets the weights ``w``; without it every chunk weighs 1, the
    official rule. With ``rule="off"``, ``alpha >= 1``, one chunk, or all distances zero, every
    chunk gets ``alpha``.
    """
    count = bounds.numel() - 1
    flat = torch.full((count,), float(alpha), dtype=torch.float64)
    if rule == "off" or alpha >= 1.0 or count == 1:
        if rule not in TEMPORAL_RULES:
            raise CompressionError(f"unknown temporal rule {rule!r}; known: {', '.join(TEMPORAL_RULES)}")
        return flat
    d = temporal_distances(features, bounds, rule).double().cpu()  # C numbers: the bisection runs on the host
    w = torch.ones_like(d) if lengths is None else lengths.to(d)
    mean = float((w * d).sum() / w.sum())
    if not mean > 0.0:
        return flat
    return bisection_projection(alpha * d / mean, alpha * float(w.sum()), weights=w)


# -- integer budgets -------------------------------------------------------------------------------
def apportion(raw: torch.Tensor, total: int, lower: torch.Tensor | int, upper: torch.Tensor | int) -> torch.Tensor:
    """Integers ``x`` in ``[lower, upper]`` with ``sum(x) = total``, close to ``raw`` (largest remainder).

    ``raw`` is first shifted by a constant (bisection) so that ``sum(clip(raw + mu))`` is ``total``,
    which spreads what the bounds cut off over the unclipped entries, then floored; the few
    units still missing (or over) go to the largest (smallest) remainders, ties to the lower index.
    """
    raw = raw.double()
    lower = torch.as_tensor(lower, device=raw.device).long().expand_as(raw)
    upper = torch.as_tensor(upper, device=raw.device).long().expand_as(raw)
    if not int(lower.sum()) <= total <= int(upper.sum()):
        raise CompressionError(f"cannot give {total} entries to {raw.numel()} parts bounded by [{int(lower.sum())}, {int(upper.sum())}]")
    if abs(float(raw.clamp(lower.double(), upper.double()).sum()) - total) > 1e-9:
        lo, hi = float((lower - raw).min()), float((upper - raw).max())
        for _ in range(100):
            mu = 0.5 * (lo + hi)
            lo, hi = (mu, hi) if float((raw + mu).clamp(lower.double(), upper.double()).sum()) < total else (lo, mu)
        raw = raw + 0.5 * (lo + hi)
    raw = raw.clamp(lower.double(), upper.double())
    x = raw.floor().long().clamp(lower, upper)
    for _ in range(raw.numel() + 2):  # at most a couple of passes; each moves up to n units
        diff = total - int(x.sum())
        if diff == 0:
            return x
        if diff > 0:
            priority = torch.where(x < upper, raw - x, torch.tensor(-math.inf, dtype=raw.dtype, device=raw.device))
        else:
            priority = torch.where(x > lower, x - raw, torch.tensor(-math.inf, dtype=raw.dtype, device=raw.device))
        order = torch.sort(priority, descending=True, stable=True).indices
        movable = int(torch.isfinite(priority).sum())
        x[order[: min(abs(diff), movable)]] += 1 if diff > 0 else -1
    raise AssertionError("apportion did not converge")  # unreachable: total lies within the bounds


# -- per-layer allocation inside one chunk -----------------------------------------------------------
def chunk_scores(q_prompt: torch.Tensor, k_chunk: torch.Tensor, scaling: float | None = None) -> torch.Tensor:
    """Prompt-to-chunk attention mass of each chunk key: ``[H, P, d] x [G, Lc, d] -> [Lc]`` fp32.

    ``softmax_j(q k_j / sqrt(d))`` over the chunk's keys only, summed over the ``P`` prompt queries
    and averaged over the ``H`` query heads; query head ``h`` reads KV group ``h // (H / G)`` (as
    ``repeat_kv``). So the scores sum to ``P``, which makes layers comparable (official
    ``StandardVidLangKVCache`` scoring).
    """
    heads, prompt, dim = q_prompt.shape
    groups = k_chunk.shape[0]
    if heads % groups:
        raise CompressionError(f"{heads} query heads do not split into {groups} KV groups")
    scale = dim ** -0.5 if scaling is None else scaling
    q = q_prompt.float().reshape(groups, heads // groups, prompt, dim)
    logits = torch.einsum("grpd,gkd->grpk", q, k_chunk.float()) * scale
    return logits.softmax(-1).sum(2).mean((0, 1))


def heavy_hitter_counts(scores: torch.Tensor, p: float = HEAVY_HITTER_P) -> torch.Tensor:
    """Per layer, the number of keys scoring above ``p`` times the layer's best: ``[L, Lc] -> [L]``."""
    return (scores > p * scores.max(-1, keepdim=True).values).sum(-1)


def layer_allocation(scores: torch.Tensor, alpha_c: float, method: str = "adakv", p: float = HEAVY_HITTER_P,
                     floor: float = MIN_LAYER_RATIO, total: int | None = None) -> torch.Tensor:
    """Per-layer keep ratios ``alpha_l [L]`` (float64) of one chunk from its scores ``[L, Lc]``.

    * ``adakv`` (official): ``n_l`` = how many of the global top-``B`` scores (over all layers'
      concatenated scores) fall in layer ``l``, ``B = floor(max(1, alpha_c Lc) L)`` unless
      ``total`` gives it; ``alpha_l = L alpha_c (n_l + 1) / sum(n + 1)``.
    * ``even``: ``alpha_l = alpha_c``.
    * ``heavy_hitter`` (paper): ``w_l = max(floor, heavy_hitter_counts(scores, p)_l / Lc)``,
      ``alpha_l = L alpha_c w_l / sum(w)``.

    Every rule keeps ``mean_l alpha_l = alpha_c``.
    """
    layers, length = scores.shape
    if method == "even":
        return torch.full((layers,), float(alpha_c), dtype=torch.float64, device=scores.device)
    if method == "adakv":
        budget = math.floor(max(1.0, alpha_c * length) * layers) if total is None else int(total)
        budget = min(max(budget, 0), layers * length)
        top = scores.reshape(-1).topk(budget).indices // length
        weight = torch.bincount(top, minlength=layers).double() + 1.0
    elif method == "heavy_hitter":
        weight = (heavy_hitter_counts(scores, p).double() / length).clamp_min(floor)
    else:
        raise CompressionError(f"unknown layer rule {method!r}; known: {', '.join(LAYER_RULES)}")
    return layers * alpha_c * weight / weight.sum()


def keep_counts(alpha_l: torch.Tensor, length: int, floor: float = MIN_LAYER_RATIO) -> torch.Tensor:
    """Official per-layer keep count ``max(1, floor(max(floor, alpha_l) Lc))``, capped at ``Lc``."""
    return (alpha_l.double().clamp_min(floor) * length).floor().long().clamp(1, length)


def topk_keep(scores: torch.Tensor, counts: torch.Tensor) -> list[torch.Tensor]:
    """Per layer, the indices of its ``counts[l]`` best scores in ascending (prompt) order.

    Batched: one sort of all layers; ties go to the earlier key.
    """
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    keep = ranks < counts.to(scores.device)[:, None]
    columns = keep.nonzero()[:, 1]  # row-major: layer 0's kept keys first, each layer's ascending
    return list(columns.split(keep.sum(1).tolist()))


# -- the method -----------------------------------------------------------------------------------
@dataclass
class ChunkPlan:
    """How one video is cut and what each chunk may keep.

    bounds : LongTensor[C + 1]   slice boundaries of the chunks
    lengths : LongTensor[C]      video tokens per chunk
    ratios : Tensor[C]           temporal-adaptive keep ratio ``alpha_c``
    budgets : LongTensor[C]      visual KV entries kept per chunk, mean over layers (exact mode)
    alpha : float                global keep ratio (``target / video tokens``)
    target : int                 planned visual KV entries, mean over layers
    """

    bounds: torch.Tensor
    lengths: torch.Tensor
    ratios: torch.Tensor
    budgets: torch.Tensor
    alpha: float
    target: int

    @property
    def num_chunks(self) -> int:
        return int(self.lengths.numel())

    def compresses(self, chunk: int) -> bool:
        return int(self.budgets[chunk]) < int(self.lengths[chunk])


@dataclass
class AdaReTaKeMethod(Method):
    """AdaReTaKe: chunked prefill with temporal- and layer-adaptive per-layer KV top-k.

    Based on https://arxiv.org/abs/2503.12559 and its official code (see the module docstring).
    ``compress`` passes the video through whole (all tokens enter prefill) and records the chunk
    plan; the LLM stage (``models.stages.adaretake``) does the compression inside the KV cache.

    Parameters
    ----------
    max_input_length : int
        Official ``max_input_length``: ``alpha = min(1, max_input_length / input length)``. Used when
        ``budget`` is None.
    budget : int, float or None
        Visual KV entries to store, mean over layers (int), or a fraction of the video's tokens.
    chunk_frames : int
        Raw frames per prefill chunk (official ``chunked_prefill_frames`` = 32): even, >= 2.
    temporal_rule : {"chunk_mean", "adjacent_frames", "off"}
    layer_rule : {"adakv", "even", "heavy_hitter"}
    max_guide_length : int or None
        Keep only the last tokens of the guide prompt appended to each chunk (official 152 for
        LongVideoBench only).
    clear_first_chunk_scores : bool
        True: paper-faithful, the first chunk is compressed. False: approximates the official
        first-chunk leak by storing chunk 1 whole.
    exact_budget : bool
        True: integer budgets by largest remainder (stored mean equals the target). False: the
        official floors.
    heavy_hitter_p : float
        Threshold of ``layer_rule="heavy_hitter"``.
    """

    name = "adaretake"
    max_input_length: int = 16000
    budget: int | float | None = None
    chunk_frames: int = 32
    temporal_rule: str = "chunk_mean"
    layer_rule: str = "adakv"
    max_guide_length: int | None = None
    clear_first_chunk_scores: bool = True
    exact_budget: bool = True
    heavy_hitter_p: float = HEAVY_HITTER_P
    last_plan: ChunkPlan | None = field(default=None, init=False, repr=False, compare=False)
    last_counts: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        def positive_int(name, value):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CompressionError(f"adaretake: {name} must be a positive int, got {value!r}")

        positive_int("max_input_length", self.max_input_length)
        positive_int("chunk_frames", self.chunk_frames)
        if self.chunk_frames % TEMPORAL_PATCH:
            raise CompressionError(f"adaretake: chunk_frames must be even (2 raw frames per slice), got {self.chunk_frames}")
        if self.max_guide_length is not None:
            positive_int("max_guide_length", self.max_guide_length)
        if self.budget is not None:
            budget_tokens(self.budget, 1)  # validates type and range
        if self.temporal_rule not in TEMPORAL_RULES:
            raise CompressionError(f"adaretake: unknown temporal_rule {self.temporal_rule!r}; known: {', '.join(TEMPORAL_RULES)}")
        if self.layer_rule not in LAYER_RULES:
            raise CompressionError(f"adaretake: unknown layer_rule {self.layer_rule!r}; known: {', '.join(LAYER_RULES)}")
        if not 0.0 < float(self.heavy_hitter_p) < 1.0:
            raise CompressionError(f"adaretake: heavy_hitter_p must lie in (0, 1), got {self.heavy_hitter_p}")

    @property
    def slices_per_chunk(self) -> int:
        return self.chunk_frames // TEMPORAL_PATCH

    def visual_target(self, video_tokens: int, text_tokens: int = 0) -> int:
        """Visual KV entries to store (mean over layers) for a video in a prompt of ``text_tokens`` text."""
        if self.budget is not None:
            return budget_tokens(self.budget, video_tokens)
        alpha = min(1.0, self.max_input_length / (video_tokens + text_tokens))
        target = min(math.floor(alpha * video_tokens), self.max_input_length - text_tokens)
        if target < 1:
            raise CompressionError(f"adaretake: max_input_length {self.max_input_length} leaves no room for the video "
                                   f"after {text_tokens} text tokens")
        return target

    def plan(self, features: torch.Tensor, text_tokens: int = 0) -> ChunkPlan:
        """The chunk plan of one video ``features [T, H, W, D]`` or ``[T, N, D]`` in a prompt with
        ``text_tokens`` text tokens."""
        if features.ndim < 3:
            raise CompressionError(f"adaretake: features must be [T, N, D] or [T, H, W, D], got {tuple(features.shape)}")
        slices = features.shape[0]
        per_slice = math.prod(features.shape[1:-1])
        video = slices * per_slice
        target = self.visual_target(video, text_tokens)
        bounds = chunk_bounds(slices, self.slices_per_chunk)
        lengths = bounds.diff() * per_slice
        if target < lengths.numel():
            raise CompressionError(f"adaretake: a budget of {target} visual KV entries is below one per chunk "
                                   f"({lengths.numel()} chunks of {self.chunk_frames} frames)")
        alpha = target / video
        ratios = temporal_ratios(features, bounds, alpha, self.temporal_rule, lengths)
        if self.exact_budget:
            budgets = apportion(ratios * lengths, target, 1, lengths)
        else:  # official: each chunk's layers keep about floor(alpha_c Lc) entries on average
            budgets = (ratios * lengths).floor().long().clamp(min=1).minimum(lengths)
        if not self.clear_first_chunk_scores:
            budgets[0] = lengths[0]
        return ChunkPlan(bounds, lengths, ratios, budgets, alpha, int(budgets.sum()))

    def layer_counts(self, scores: torch.Tensor, plan: ChunkPlan, chunk: int) -> torch.Tensor:
        """Per-layer keep counts ``[L]`` of chunk ``chunk`` from its scores ``[L, Lc]``."""
        layers, length = scores.shape
        if not plan.compresses(chunk):
            return torch.full((layers,), length, dtype=torch.long)
        if not self.exact_budget:
            ratio = float(plan.ratios[chunk])
            return keep_counts(layer_allocation(scores, ratio, self.layer_rule, self.heavy_hitter_p), length).cpu()
        budget = int(plan.budgets[chunk])
        alpha_l = layer_allocation(scores, budget / length, self.layer_rule, self.heavy_hitter_p, total=budget * layers)
        raw = alpha_l.cpu().clamp_min(MIN_LAYER_RATIO) * length
        return apportion(raw, budget * layers, 1, length)

    def compress_chunk(self, scores: torch.Tensor, plan: ChunkPlan, chunk: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The per-chunk step: ``(counts [L], kept indices per layer)`` from the scores ``[L, Lc]``."""
        counts = self.layer_counts(scores, plan, chunk)
        return counts, topk_keep(scores, counts)

    def compress(self, video: VideoTokens) -> CompressedVideo:
        """All tokens pass (AdaReTaKe compresses the KV cache, not the input); records the chunk
        plan in ``last_plan``, with the question's length standing in for the prompt's text."""
        text = 0 if video.query is None else int(video.query.shape[0])
        plan = self.plan(video.features, text)
        self.last_plan = plan
        self.last_counts = {"chunks": plan.num_chunks, "budgets": plan.budgets.tolist(), "total": plan.target}
        return gather_tokens(video, torch.arange(video.num_tokens, device=video.features.device))
