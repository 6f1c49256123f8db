"""``cdpruner``: CDPruner (NeurIPS 2025), a conditional DPP over each frame's visual tokens.

Per frame (one temporal slice of ``N = H W`` tokens) the official LLaVA recipe
(``Theia-4869/CDPruner``, ``llava/model/llava_arch.py``): similarity ``S = X^ X^T`` of the
L2-normalised features in fp32; relevance ``r`` of each token to the instruction, min-max
normalised as ``(r~ - min + 1e-6) / (max - min)``; conditional kernel ``L = diag(r) S diag(r)``;
fast greedy MAP inference (Chen et al., NeurIPS 2018, incremental Cholesky) for ``k`` tokens; the
picks sorted back into raster order. The batch dimension of the official code is the frames here
(the paper's video setting keeps a fixed count per frame); the greedy loop runs ``k`` times,
each step vectorised over all frames at once.

Qwen adaptation (no official Qwen/video code; methods.md §2f): the similarity features are the
vision-tower output (already in LLM space), and the relevance is the cosine between each visual
token and the question's LLM input embeddings (``VideoTokens.query``, the rows ``question`` marks:
the user's text after the video, as the official code embeds the question string; ``relevance_text
="all"`` takes the chat template's tail too), averaged over the question tokens, as in the OpenVINO
GenAI port, with the cosine's own sign (``relevance_sign="official"`` negates it as the official
code negates its CLIP cosine; on the testbeds the positive sign measured better on average,
docs/methods.md). Without a query every token has relevance 1 (plain DPP).

Rank: ``rank(L) <= min(N, D)``. When every unpicked token's conditional variance ``d^2`` falls
below ``eps`` (the requested count exceeds the kernel's numerical rank), the remaining picks of
that frame are the most relevant unpicked tokens, so the count stays exact and nothing is NaN
(the official code has no such stop).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import CompressionError, SelectionMethod, VideoTokens
from .budget import budget_tokens

RELEVANCE_NORMS = ("clip", "frame")
RELEVANCE_SIGNS = ("official", "positive")
RELEVANCE_TEXTS = ("question", "all")

# fp32 elements of one chunk of frames when normalising features (1 GiB): bounds the transient
# fp32 copy on long clips (1800 x 576 x 4096 would otherwise need 17 GB); each chunk is batched.
CHUNK_ELEMENTS = 1 << 28


def token_cosines(features: torch.Tensor, query: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One fp32 pass over ``features [F, N, D]``: the cosine similarity ``S [F, N, N]`` of the
    tokens and each token's mean cosine to the query tokens ``[F, N]`` (None without a query)."""
    f, n, d = features.shape
    has_query = query is not None and query.numel() > 0
    # mean over query tokens of cos(x_i, q_m) = x^_i . mean_m(q^_m): one mat-vec
    direction = torch.nn.functional.normalize(query.float(), dim=-1).mean(0) if has_query else None
    sim = torch.empty(f, n, n, device=features.device)
    raw = torch.empty(f, n, device=features.device) if has_query else None
    step = max(1, CHUNK_ELEMENTS // max(1, n * d))
    for lo in range(0, f, step):  # a handful of chunks, not a loop over frames
        x = torch.nn.functional.normalize(features[lo:lo + step].float(), dim=-1)
        torch.bmm(x, x.transpose(1, 2), out=sim[lo:lo + step])
        if has_query:
            raw[lo:lo + step] = x @ direction
    return sim, raw


def normalise_relevance(raw: torch.Tensor | None, norm: str = "clip", shape=None) -> torch.Tensor:
    """Official min-max normalisation ``(r~ - min + 1e-6) / (max - min)`` of ``raw [F, N]``.

    ``norm="clip"`` takes min and max over all frames (the official batch-global normalisation,
    the batch being the frames); ``"frame"`` over each frame. A constant relevance (max == min)
    gives ones (the official formula would divide by zero); ``raw=None`` (no query) gives ones of
    ``shape``.
    """
    if raw is None:
        return torch.ones(shape)
    dims = (0, 1) if norm == "clip" else (1,)
    low = raw.amin(dim=dims, keepdim=True)
    span = raw.amax(dim=dims, keepdim=True) - low
    out = (raw - low + 1e-6) / span.clamp_min(1e-12)
    return torch.where(span > 1e-12, out, torch.ones_like(out))


def relevance(features: torch.Tensor, query: torch.Tensor | None, norm: str = "clip") -> torch.Tensor:
    """``[F, N]`` fp32 relevance of each token of ``features [F, N, D]`` to ``query [Q, D]``
    (None or empty: all ones, a plain DPP), normalised by ``normalise_relevance``."""
    raw = token_cosines(features, query)[1]
    return normalise_relevance(raw, norm, features.shape[:2]).to(features.device)


def conditional_kernel(features: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """``[F, N, N]`` fp32 ``L = diag(r) S diag(r)`` with ``S`` the cosine similarity of the tokens."""
    sim = token_cosines(features, None)[0]
    return sim.mul_(rel[:, :, None]).mul_(rel[:, None, :])


def greedy_map(kernel: torch.Tensor, k: int, rel: torch.Tensor | None = None,
               eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Fast greedy MAP of a DPP per frame (Chen et al. 2018): ``[F, k]`` picks in pick order and
    ``[F]`` how many of them the DPP made (the rest came from the exhausted-kernel fallback).

    kernel : [F, N, N] symmetric PSD; rel : [F, N] fallback order (default: the kernel's diagonal).
    Step ``i`` picks ``argmax d^2`` (the token that most increases ``log det L_S``), then updates
    the Cholesky rows ``c`` and the conditional variances ``d^2 -= e^2``. A frame whose largest
    unpicked ``d^2`` is below ``eps`` is exhausted: from then on it takes its most relevant
    unpicked token and its ``c``/``d^2`` stay put. The loop over ``i`` is inherent; frames are a
    batch dimension throughout.
    """
    f, n, _ = kernel.shape
    if not 0 < k <= n:
        raise CompressionError(f"cdpruner: cannot pick {k} of {n} tokens")
    # Few, whole-tensor ops per step (the loop is launch-bound on a GPU): gathers and scatters
    # instead of advanced indexing, and the full [k] Cholesky columns (rows not yet filled are 0).
    score = torch.diagonal(kernel, dim1=1, dim2=2).clone()  # d^2, -inf once picked
    fallback = (score if rel is None else rel.to(score.dtype)).clone()  # relevance, -inf once picked
    c = torch.zeros(f, k, n, device=kernel.device, dtype=kernel.dtype)
    picks = torch.empty(f, k, dtype=torch.long, device=kernel.device)
    stopped = torch.zeros(f, k, dtype=torch.bool, device=kernel.device)  # exhausted at step i
    exhausted = torch.zeros(f, dtype=torch.bool, device=kernel.device)
    for i in range(k):
        best, j = score.max(dim=1)
        exhausted |= best < eps
        j = torch.where(exhausted, fallback.argmax(dim=1), j)[:, None]  # [F, 1]
        row = kernel.gather(1, j[:, :, None].expand(f, 1, n))  # [F, 1, N]
        cj = c.gather(2, j[:, None, :].expand(f, k, 1))  # [F, k, 1]
        scale = torch.where(exhausted, 0.0, best.clamp_min(eps).rsqrt())  # exhausted: e = 0, d^2 stays
        e = (row - torch.bmm(cj.transpose(1, 2), c)).squeeze(1) * scale[:, None]  # [F, N]
        c[:, i] = e
        score.addcmul_(e, e, value=-1.0).scatter_(1, j, float("-inf"))
        fallback.scatter_(1, j, float("-inf"))
        picks[:, i] = j[:, 0]
        stopped[:, i] = exhausted
    return picks, (~stopped).sum(1)


def frame_counts(budget: float, frames: int, per_frame: int) -> torch.Tensor:
    """Tokens per frame for a total budget: ``floor(R / F)`` each, the remainder one more for the
    earliest frames (largest remainder with equal shares), so the total is exactly ``R``."""
    total = budget_tokens(budget, frames * per_frame)
    base, extra = divmod(total, frames)
    return torch.full((frames,), base, dtype=torch.long) + (torch.arange(frames) < extra).long()


@dataclass
class CDPrunerMethod(SelectionMethod):
    """CDPruner: conditional-DPP token selection per frame.

    Based on https://arxiv.org/abs/2506.10967, code github.com/Theia-4869/CDPruner.

    Parameters
    ----------
    tokens_per_frame : int
        Tokens kept in every temporal slice (the official ``visual_token_num``; the paper's video
        setting keeps 64 per frame). Above ``H W`` keeps every token. Ignored when ``budget`` is set.
    budget : int, float or None
        Total token count or retention ratio over the clip: ``floor(R / T)`` per frame, the
        remainder one more for the earliest frames; exact total. Above the video's size keeps all.
    relevance_norm : str
        ``"clip"`` (default): relevance min-max over all frames of the clip, as the official code
        normalises over its whole batch; ``"frame"``: per frame.
    relevance_sign : str
        ``"official"``: the negated cosine, as the official code computes its CLIP patch-text
        relevance; ``"positive"``: the cosine itself. The official code negates a CLIP cosine,
        which ranks patches counter-intuitively (the OpenVINO port keeps the negation for CLIP
        only, ``use_negative_relevance``); here both sides are LLM input embeddings, where the
        sign's meaning is an empirical question (docs/methods.md: both measured on the testbeds).
    relevance_text : str
        ``"question"``: the question's own tokens (the user's text after the video, as the
        official code embeds the question string); ``"all"``: every text token after the video,
        the chat template's tail (end of turn, assistant header) included.
    eps : float
        Conditional-variance floor below which a frame's DPP is exhausted (see ``greedy_map``).
    """

    name = "cdpruner"
    tokens_per_frame: int = 64
    budget: int | float | None = None
    relevance_norm: str = "clip"
    relevance_sign: str = "positive"
    relevance_text: str = "question"
    eps: float = 1e-6
    last_counts: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tpf = self.tokens_per_frame
        if isinstance(tpf, bool) or not isinstance(tpf, int) or tpf < 1:
            raise CompressionError(f"cdpruner: tokens_per_frame must be a positive int, got {tpf!r}")
        budget_tokens(self.budget, 1)  # type and sign check only (the size is known per video)
        if self.relevance_norm not in RELEVANCE_NORMS:
            raise CompressionError(f"cdpruner: relevance_norm must be one of {', '.join(RELEVANCE_NORMS)}, "
                                   f"got {self.relevance_norm!r}")
        for knob, allowed in (("relevance_sign", RELEVANCE_SIGNS), ("relevance_text", RELEVANCE_TEXTS)):
            if getattr(self, knob) not in allowed:
                raise CompressionError(f"cdpruner: {knob} must be one of {', '.join(allowed)}, got {getattr(self, knob)!r}")
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not self.eps > 0:
            raise CompressionError(f"cdpruner: eps must be a positive number, got {self.eps!r}")

    def counts(self, frames: int, per_frame: int) -> torch.Tensor:
        """Tokens kept in each frame, ``[T]``."""
        if self.budget is None:
            return torch.full((frames,), min(self.tokens_per_frame, per_frame), dtype=torch.long)
        return frame_counts(self.budget, frames, per_frame)

    def select(self, video: VideoTokens) -> torch.Tensor:
        t, h, w = video.grid
        n = h * w
        device = video.features.device
        counts = self.counts(t, n).to(device)
        query = video.query
        if query is not None and self.relevance_text == "question" and video.question is not None:
            query = query[video.question]
        has_query = query is not None and query.numel() > 0
        self.last_counts = {"per_frame": counts.tolist(), "total": int(counts.sum()),
                            "relevance": f"{self.relevance_norm}/{self.relevance_sign}/{self.relevance_text}"
                            if has_query else "none (no query: plain DPP)"}
        if bool((counts == n).all()):  # everything kept: the DPP would only reorder
            return torch.arange(t * n, device=device)
        sim, raw = token_cosines(video.features.reshape(t, n, -1), query)
        if raw is not None and self.relevance_sign == "official":
            raw = -raw
        rel = normalise_relevance(raw, self.relevance_norm, (t, n)).to(device)
        kernel = sim.mul_(rel[:, :, None]).mul_(rel[:, None, :])  # L = diag(r) S diag(r), in place
        k = int(counts.max())
        picks, dpp_steps = greedy_map(kernel, k, rel, self.eps)  # [T, k], [T]
        keep = torch.arange(k, device=device)[None, :] < counts[:, None]  # each frame's first picks
        # picks beyond a frame's DPP steps came from the fallback (count above the kernel's rank)
        self.last_counts["fallback_picks"] = int((counts - dpp_steps.clamp_max(counts)).sum())
        flat = picks + torch.arange(t, device=device)[:, None] * n
        return flat[keep].sort().values  # raster order
