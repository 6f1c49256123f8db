"""Visual-token counts of a preset without a model, and budget matching (Fre-Res appendix D).

A preset's count depends on its input's merged-token grid (``config.input_grid``) and, for
content-dependent methods (Fre-Res's energy filter, AdaReTaKe's temporal split), on the video;
without a model we run the method on a **probe clip** of that grid: a fixed random base grid with
a slow drift and small noise (seeded), D = 16, plus a random question of ``config.prompt_tokens``
tokens. Counts that depend only on the shape (full, uniform, DyCoke, CDPruner, Fourier, the
Fre-Res budget rule with ``energy_floor=0``, AdaReTaKe's KV total) are exact; content-dependent
ones are this clip's.

Budget matching tunes only the method's primary knob (``PRIMARY_KNOBS``) until its count meets the
budget preset's target on the row's input: ``nearest`` (closest reachable count, ties below) or
``at_most`` (largest count not above it). A target stated on the paper's input (``of`` tokens)
scales to another input by ``target / of``, so a budget-matched row keeps its ratio on the
synthetic benchmark.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .config import (
    compose,
    experiment_presets,
    input_grid,
    input_size,
    method_knobs,
    override_value,
    prompt_tokens,
    split_arguments,
)
from .core import CompressionError, VideoTokens, build_method

PROBE_DIM = 16


@dataclass(frozen=True)
class Knob:
    """The one knob budget matching may tune; ``high=None`` means the video's token count."""

    name: str
    low: float
    high: float | None
    integer: bool
    increasing: bool  # the count grows with the knob
    direct: bool = False  # the knob is the method's own token budget: set it to the target, no search


# appendix D: DyCoke's retention (its TTM prune ratio k, which sets the count), CDPruner's per-frame
# count, Fourier-VLM's frequency truncation; Fre-Res and uniform through their own budget rule
# (never above the target, whatever ``rule`` says); AdaReTaKe through its context length.
PRIMARY_KNOBS: dict[str, Knob] = {
    "dycoke": Knob("k", 0.0, 1.0, integer=False, increasing=False),
    "cdpruner": Knob("tokens_per_frame", 1, None, integer=True, increasing=True),
    "fourier": Knob("rho", 1e-6, 1.0, integer=False, increasing=True),
    "freres": Knob("budget", 1, None, integer=True, increasing=True, direct=True),
    "uniform": Knob("budget", 1, None, integer=True, increasing=True, direct=True),
    "adaretake": Knob("max_input_length", 1, None, integer=True, increasing=True),
}
FLOAT_STEPS = 40


def drifting_features(frames: int, height: int, width: int, dim: int, device="cpu", dtype=torch.float32,
                      generator: torch.Generator | None = None, chunk: int | None = None) -> torch.Tensor:
    """``[T, H, W, D]`` features that move like a video: a base grid plus a slow drift and small
    noise, drawn from ``generator`` (default: seeded with 0 on ``device``). Built ``chunk`` frames at
    a time (default: all at once), so a long clip in a low precision never holds a full-size fp32
    copy (the 1800-frame benchmarks)."""
    g = generator if generator is not None else torch.Generator(device=device).manual_seed(0)
    base = torch.randn(height, width, dim, device=device, generator=g)
    drift = torch.randn(height, width, dim, device=device, generator=g)
    out = torch.empty(frames, height, width, dim, device=device, dtype=dtype)
    step = chunk or frames
    for lo in range(0, frames, step):  # building an input, not the timed code
        t = torch.arange(lo, min(lo + step, frames), device=device, dtype=torch.float32)
        phase = torch.sin(3 * t / frames)[:, None, None, None]
        noise = 0.01 * torch.randn(len(t), height, width, dim, device=device, generator=g)
        out[lo:lo + len(t)] = (base + 0.3 * phase * drift + noise).to(dtype)
    return out


def probe_video(t: int, h: int, w: int, text_tokens: int = 64, dim: int = PROBE_DIM, seed: int = 0) -> VideoTokens:
    """A deterministic clip of grid ``(t, h, w)`` (``drifting_features``) and a random question."""
    g = torch.Generator().manual_seed(seed)
    features = drifting_features(t, h, w, dim, generator=g)  # the question is drawn after it
    grid = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    query = torch.randn(max(text_tokens, 1), dim, generator=g)
    return VideoTokens(features, torch.stack(grid), query=query)


def count_tokens(name: str, knobs: dict, video: VideoTokens) -> dict:
    """``{"visual_tokens", "input_tokens", "kind"}`` of method ``name`` on ``video``.

    ``visual_tokens`` is what the papers match: tokens entering the LLM, or for AdaReTaKe (which
    compresses the KV cache) the visual KV entries it stores; ``input_tokens`` enter the prefill."""
    method = build_method(name, **knobs)
    out = method(video)
    if name == "adaretake":
        plan = method.last_plan
        return {"visual_tokens": int(method.last_counts["total"]), "input_tokens": out.num_tokens, "kind": "kv",
                "chunks": {"lengths": plan.lengths.tolist(), "kept": plan.budgets.tolist()}}
    return {"visual_tokens": out.num_tokens, "input_tokens": out.num_tokens, "kind": "input"}


def scaled_target(budget: DictConfig, full_tokens: int) -> int | None:
    """The budget's target on an input of ``full_tokens`` tokens (scaled from the paper's ``of``)."""
    if budget.target is None:
        return None
    if budget.of is None or budget.of == full_tokens:
        return int(budget.target)
    return max(1, round(budget.target * full_tokens / budget.of))


def match_knob(name: str, knobs: dict, video: VideoTokens, target: int, rule: str) -> tuple[dict, dict]:
    """Tune ``PRIMARY_KNOBS[name]`` so the count meets ``target``; return (knobs, counts)."""
    if name not in PRIMARY_KNOBS:
        raise CompressionError(f"{name}: no budget knob to tune (its count is fixed by the input)")
    knob = PRIMARY_KNOBS[name]
    knobs = {k: v for k, v in knobs.items() if k != "budget"}  # the knob alone sets the count
    if knob.direct:  # its budget rule never exceeds the target and says how it fills it
        return {**knobs, knob.name: int(target)}, count_tokens(name, {**knobs, knob.name: int(target)}, video)
    high = knob.high if knob.high is not None else _knob_ceiling(name, video)
    cache: dict = {}

    def count(value):
        if value not in cache:
            try:
                cache[value] = count_tokens(name, {**knobs, knob.name: value}, video)
            except CompressionError:  # below what the method can emit: an infinitely small count
                cache[value] = None
        return cache[value]

    def size(value) -> float:
        c = count(value)
        return -math.inf if c is None else c["visual_tokens"]

    lo, hi = (knob.low, high) if knob.increasing else (high, knob.low)  # lo gives the fewest tokens

    def below(value) -> bool:
        return size(value) <= target

    if not below(lo):  # even the fewest tokens exceed the target
        if rule == "at_most":
            raise CompressionError(f"{name}: {knob.name}={lo} already emits {size(lo):.0f} visual tokens, "
                                   f"above the target {target}")
        best = lo
    elif below(hi):
        best = hi
    elif knob.integer:
        a, b = int(lo), int(hi)  # below(a), not below(b); the floor midpoint lies strictly between
        while abs(b - a) > 1:
            mid = (a + b) // 2
            a, b = (mid, b) if below(mid) else (a, mid)
        best = a if rule == "at_most" or target - size(a) <= size(b) - target else b
    else:
        a, b = float(lo), float(hi)
        for _ in range(FLOAT_STEPS):
            mid = (a + b) / 2
            a, b = (mid, b) if below(mid) else (a, mid)
        best = a if rule == "at_most" or target - size(a) <= size(b) - target else b
        best = _short_float(best, size)
    if count(best) is None:
        raise CompressionError(f"{name}: no value of {knob.name} reaches {target} visual tokens on this input")
    return {**knobs, knob.name: best}, count(best)


def _short_float(value: float, size) -> float:
    """The shortest decimal giving the same count as ``value`` (a readable config value)."""
    for digits in range(1, 8):
        short = round(value, digits)
        if short != value and size(short) == size(value):
            return short
    return value


def _knob_ceiling(name: str, video: VideoTokens) -> int:
    _, h, w = video.grid
    if name == "cdpruner":
        return h * w
    if name == "adaretake":
        return video.num_tokens + int(video.query.shape[0])
    return video.num_tokens


@dataclass
class Resolved:
    """A composed experiment with its knobs matched to its budget, and the counts they give."""

    cfg: DictConfig
    method: str
    knobs: dict
    grid: tuple[int, int, int]
    full_tokens: int
    counts: dict
    target: int | None
    matched: str | None  # the tuned knob

    def summary(self, name: str | None = None) -> dict:
        cfg = self.cfg
        return {
            "experiment": name, "table": cfg.row.table, "row": cfg.row.id, "model": cfg.model.name,
            "family": cfg.model.family, "benchmark": cfg.benchmark.name, "method": self.method,
            "knobs": self.knobs, "matched_knob": self.matched,
            "input": dict(zip(("frames", "height", "width"), input_size(cfg)), frame_encoding=cfg.input.frame_encoding),
            "grid": list(self.grid), "visual_tokens_full": self.full_tokens,
            "visual_tokens": self.counts["visual_tokens"], "prefill_visual_tokens": self.counts["input_tokens"],
            "kind": self.counts["kind"], "budget": cfg.budget.name, "target": self.target,
            "paper_target": cfg.budget.target,
        }

    def resolved_config(self) -> DictConfig:
        """The config with the matched knobs written in (what the run uses)."""
        cfg = OmegaConf.to_container(self.cfg, resolve=True)
        cfg["method"] = {"name": self.method, **self.knobs}
        return OmegaConf.create(cfg)


def resolve(cfg: DictConfig) -> Resolved:
    """Match the method's knob to the budget on the row's input (no model is loaded)."""
    name, knobs = method_knobs(cfg)
    grid = input_grid(cfg)
    video = probe_video(*grid, text_tokens=prompt_tokens(cfg))
    full = video.num_tokens
    target = scaled_target(cfg.budget, full)
    matched = None
    if target is None or name == "full":
        counts = count_tokens(name, knobs, video)
    else:
        if cfg.budget.not_above_method:  # e.g. Fre-Res no larger than Fourier matched to the same target
            other_name, other_knobs = method_knobs(compose([f"method={cfg.budget.not_above_method}"]))
            _, other_counts = match_knob(other_name, other_knobs, video, target, "nearest")
            target = min(target, other_counts["visual_tokens"])
        knobs, counts = match_knob(name, knobs, video, target, cfg.budget.rule)
        matched = PRIMARY_KNOBS[name].name
    return Resolved(cfg, name, knobs, grid, full, counts, target, matched)


def tokens_main(argv: list[str]) -> None:
    """``python -m freres_lmms tokens experiment=<preset> [overrides]``: one JSON line."""
    overrides, _ = split_arguments(argv)
    print(json.dumps(resolve(compose(overrides)).summary(override_value(overrides, "experiment"))))


def budget_match_main(argv: list[str]) -> None:
    """``python -m freres_lmms budget-match experiment=<preset>|table=<id> [overrides] [--out=DIR]``.

    Matches each row's primary knob to its target, writes each resolved config to
    ``DIR/<preset>.yaml`` (default ``outputs/budget_match``) and prints target vs achieved."""
    from .tables.spec import table_presets

    overrides, options = split_arguments(argv)
    table = override_value(overrides, "table")
    overrides = [o for o in overrides if not o.startswith("table=")]
    if table:
        presets = table_presets(table)
    else:
        presets = [o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")]
        overrides = [o for o in overrides if not o.startswith("experiment=")]
        if not presets:
            sys.exit("budget-match: give experiment=<preset> or table=<id>; presets: " + ", ".join(experiment_presets()))
    out = Path(options.get("out", "outputs/budget_match"))
    print("| experiment | method | knob | value | paper target | target here | achieved | full |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for preset in presets:
        resolved = resolve(compose([f"experiment={preset}", *overrides]))
        path = out / f"{preset}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(resolved.resolved_config(), path)
        s = resolved.summary(preset)
        value = resolved.knobs.get(resolved.matched) if resolved.matched else None
        value = f"{value:.4g}" if isinstance(value, float) else value
        print(f"| {preset} | {s['method']} | {resolved.matched or '-'} | {value if value is not None else '-'} | "
              f"{s['paper_target'] or '-'} | {s['target'] or '-'} | {s['visual_tokens']} ({s['kind']}) | {s['visual_tokens_full']} |",
              flush=True)  # each row as it is matched: a table's matching takes minutes
    print(f"resolved configs: {out}/")
