"""Fre-Res emits no degenerate token under any budget: clips of 1 to 900 slices, grids of 1x1 to
24x24, budgets from one token to the whole clip, every mode, and the real encoder's tokens in both
frame encodings. Every output keeps within the budget, has no all-zero token and no two tokens
equal in features and position; a mode that cannot emit anything refuses with a clear error."""

from __future__ import annotations

import pytest
import torch

from freres_lmms.core import CompressionError, FreResMethod, FullMethod, Method, VideoTokens
from freres_lmms.core.budget import budget_tokens
from freres_lmms.core.freres import MODES

GRIDS = [(1, 1), (1, 5), (3, 2), (4, 4), (7, 7), (8, 8), (24, 24)]
BUDGETS = [1, 0.02, 0.1, 0.25, 0.5, 1.0, None]


def clip(t: int, h: int, w: int, d: int = 8, seed: int = 0, still: bool = False) -> VideoTokens:
    """Half the grid is exactly still background, the rest drifts, with a scene cut halfway;
    ``still``: every slice identical (a still scene, where copies are easiest to make)."""
    g = torch.Generator().manual_seed(seed + 1000 * t + h)
    base = torch.randn(1, h, w, d, generator=g)
    features = base.expand(t, h, w, d).clone()
    if not still:
        moving = (torch.rand(1, h, w, 1, generator=g) < 0.5).float()
        time = torch.arange(t, dtype=torch.float32).view(t, 1, 1, 1) / t
        drift = torch.randn(1, h, w, d, generator=g)
        features += moving * (0.5 * torch.sin(3 * time) * drift + 0.05 * torch.randn(t, h, w, d, generator=g))
        features[t // 2:] += moving * 2 * torch.randn(1, h, w, d, generator=g)
    ti, hi, wi = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return VideoTokens(features, torch.stack([2 * ti + 7, hi + 7, wi + 7]))


def assert_sound(out, video: VideoTokens, total: int, where: str) -> None:
    n = out.num_tokens
    assert 0 < n <= total, f"{where}: {n} tokens for a budget of {total}"
    assert bool((out.features.norm(dim=-1) > 0).all()), f"{where}: an all-zero token"
    rows = torch.cat([out.features.double(), out.positions.T.double()], 1)
    assert torch.unique(rows, dim=0).shape[0] == n, f"{where}: two tokens equal in features and position"
    flat = video.positions.reshape(3, -1)
    assert bool(((out.positions >= flat.min(1, keepdim=True).values) & (out.positions <= flat.max(1, keepdim=True).values)).all())
    assert int(out.slots.min()) >= 0 and int(out.slots.max()) < video.num_tokens
    for layer in out.deepstack:
        assert layer.shape == out.features.shape


def sweep(video: VideoTokens, label: str, budgets=BUDGETS, modes=MODES) -> dict:
    """Every mode at every budget; returns how many runs refused (temporal_only only)."""
    refused = {}
    for mode in modes:
        for budget in budgets:
            method = FreResMethod(budget=budget, mode=mode)
            where = f"{label} mode={mode} budget={budget}"
            try:
                out = method(video)
            except CompressionError as err:
                assert mode == "temporal_only" and "temporal_only has nothing to emit" in str(err), f"{where}: {err}"
                refused[mode] = refused.get(mode, 0) + 1
                continue
            assert_sound(out, video, budget_tokens(budget, video.num_tokens), where)
    return refused


@pytest.mark.parametrize("t", [1, 2, 3, 4, 8, 16, 64, 900])
def test_no_degenerate_tokens_on_any_shape_and_budget(t):
    grids = GRIDS if t < 900 else [(1, 1), (8, 8), (24, 24)]
    for h, w in grids:
        refused = sweep(clip(t, h, w), f"T={t} {h}x{w}")
        if t <= 8:  # 8 anchors cover every slice: the temporal-only ablation has no P-frame
            assert refused.get("temporal_only") == len(BUDGETS)
        sweep(clip(t, h, w, still=True), f"still T={t} {h}x{w}", budgets=[0.25, 1.0, None])


def test_statics_never_sit_where_an_anchor_kept_a_token():
    video = clip(16, 8, 8)
    method = FreResMethod(tokens_per_anchor=32, mode="linear_concat", statics=24)
    out = method(video)
    counts = method.last_counts
    anchors = out.slots[:counts["anchors"]] % 64
    statics = out.slots[-counts["statics"]:] % 64
    assert counts["statics"] > 0 and not set(statics.tolist()) & set(anchors.tolist())
    single = FreResMethod(anchors=1, statics=24)  # one anchor: a static would be its copy
    single(video)
    assert single.last_counts["plan"]["statics"] == single.last_counts["statics"] == 0


class Recorder(Method):
    """Keeps what the adapter hands a method (the encoder's real tokens) and compresses nothing."""

    name = "recorder"

    def __init__(self):
        self.videos = []

    def compress(self, video):
        self.videos.append(video)
        return FullMethod().compress(video)


@pytest.mark.parametrize("family", ["qwen2vl", "qwen3vl"])
def test_no_degenerate_tokens_on_encoder_outputs_in_both_frame_encodings(family, loaded, videos):
    from freres_lmms.data.video import load_video
    from freres_lmms.lmms.wrapper import prompt_text
    from freres_lmms.models import ADAPTERS

    model, processor = loaded[family]
    adapter = ADAPTERS[family](model, processor)
    recorder = Recorder()
    for doc in videos[:3]:
        clip8 = load_video(doc["video"], 8)
        for encoding in (clip8, clip8.per_frame()):  # paired: 4 slices; per_frame: 8
            inputs = processor(text=[prompt_text(processor, "What moves?", 1)], videos=[encoding.frames],
                               video_metadata=[encoding.metadata()], return_tensors="pt")
            adapter.compress_inputs(dict(inputs), recorder)
    assert sorted({v.grid[0] for v in recorder.videos}) == [4, 8]
    for i, video in enumerate(recorder.videos):
        sweep(video, f"{family} video {i} grid {video.grid}", budgets=[1, 0.1, 0.25, 0.5, None])
