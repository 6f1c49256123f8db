"""The trained testbed: shipped checkpoints answer the synthetic task, and the regression checks catch broken methods.

The accuracy tests run the checkpoints on test-split tensors (seconds). The regression tests go
through lmms-eval on the task's mp4 files, like ``make ci-regression``: every registered method
must stay within tolerance of ``results/regression/baseline.json``, and methods planted here
with broken positions or the wrong tokens kept must fail that same comparison.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from freres_lmms import regression
from freres_lmms.core import Method, SelectionMethod, VideoTokens, gather_tokens
from freres_lmms.data.checkpoints import MODEL_CLASSES, TESTBED_FAMILIES
from freres_lmms.data.checkpoints import testbed_checkpoint as shipped  # not collected as a test
from freres_lmms.data.synthetic import QTYPES, SPLIT_SEEDS, ensure_synthetic
from freres_lmms.data.training import SyntheticBatches, answer_accuracy

BAR = 95.0  # the bar per question type at full tokens


@pytest.mark.parametrize("family", TESTBED_FAMILIES)
def test_shipped_checkpoint_records_the_bar(family):
    info = json.loads((shipped(family) / "freres_tiny.json").read_text())
    assert info["family"] == family and info["test_samples"] >= 1400 and info["train_minutes"] <= 15
    assert all(info["test_accuracy_first_token"][q] >= BAR for q in QTYPES), info
    size = (shipped(family) / "model.safetensors").stat().st_size
    assert size < 25e6


@pytest.mark.parametrize("family", TESTBED_FAMILIES)
def test_testbed_answers_every_type_at_full_tokens(family):
    """70 test-split samples (10 per type) on the CPU: at least 9 of 10 right in every type."""
    from transformers import AutoProcessor

    path = shipped(family)
    model = MODEL_CLASSES[family].from_pretrained(path, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(path)
    batches = SyntheticBatches(processor, frames=16, size=224, fps=8)
    scene, questions = batches.draw(70, SPLIT_SEEDS["test"], on_cpu=True)
    correct = answer_accuracy(model, batches, scene, questions, chunk=35)
    for index, name in enumerate(QTYPES):
        assert int(correct[questions.qtype == index].sum()) >= 9, name


# -- methods planted to break what a compression method must preserve ---------------------------
def _every_token(video: VideoTokens):
    return gather_tokens(video, torch.arange(video.num_tokens))


@dataclass
class SwappedSpatialPositions(Method):
    """Keeps every token but gives it (t, w, h): a transposed grid, as a method mixing up its axes would."""

    name = "planted_swapped_hw"

    def compress(self, video):
        out = _every_token(video)
        out.positions = out.positions[[0, 2, 1]]
        return out


@dataclass
class ReversedTime(Method):
    """Keeps every token but runs the temporal positions backwards."""

    name = "planted_reversed_t"

    def compress(self, video):
        out = _every_token(video)
        t = out.positions[0]
        out.positions = torch.stack([t.max() + t.min() - t, out.positions[1], out.positions[2]])
        return out


@dataclass
class TemporalPrefix(SelectionMethod):
    """As many tokens as uniform at 50%, but the first half of the clip instead of every other slice."""

    name = "planted_prefix"

    def select(self, video):
        t, h, w = video.grid
        return torch.arange((t // 2) * h * w)


@pytest.fixture(scope="module")
def baseline():
    ensure_synthetic()
    stored = json.loads(regression.BASELINE.read_text())
    assert stored["limit"] == regression.LIMIT
    return stored["checks"]


@pytest.mark.slow
def test_every_method_matches_the_stored_baseline(baseline):
    # two one-thread processes: the baseline's numbers within tolerance, token counts exact, in 0.7 the time
    measured = regression.measure_all([(c, m, k) for c in regression.CHECKPOINTS for m, k in regression.runs()], jobs=2)
    assert set(measured) == set(baseline)
    assert regression.compare(measured, baseline) == []
    for checkpoint in regression.CHECKPOINTS:  # the baseline itself meets the bar at full tokens
        assert all(baseline[f"{checkpoint}/full"][q] >= BAR for q in QTYPES)


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint, planted, imitates, broken", [
    ("testbed-qwen2vl", SwappedSpatialPositions(), "full", "direction"),
    ("testbed-qwen3vl", SwappedSpatialPositions(), "full", "direction"),
    ("testbed-qwen2vl", ReversedTime(), "full", "destination"),
    ("testbed-qwen2vl", TemporalPrefix(), "uniform/budget=0.5", "destination"),
])
def test_broken_methods_fail_the_regression_check(baseline, checkpoint, planted, imitates, broken):
    """A method that breaks positions or keeps the wrong tokens, checked as the method it imitates, fails."""
    name = f"{checkpoint}/{imitates}"
    measured = regression.measure(checkpoint, planted)
    assert measured["visual_tokens"] == baseline[name]["visual_tokens"]  # same count: only accuracy can tell
    problems = regression.compare({name: measured}, baseline)
    assert any(f"{broken} accuracy" in line for line in problems), problems
    assert measured[broken] <= baseline[name][broken] - 30


def test_compare_reports_token_counts_errors_and_drops():
    ref = {"a/full": {**{q: 100.0 for q in QTYPES}, "all": 100.0, "visual_tokens": 512.0, "errors": 0}}
    same = {"a/full": dict(ref["a/full"], count=95.0)}
    assert regression.compare(same, ref) == []  # one answer in 20 is within tolerance
    worse = {"a/full": dict(ref["a/full"], count=80.0, visual_tokens=500.0, errors=2, note="2 samples failed: x")}
    problems = regression.compare(worse, ref)
    assert any("count accuracy 80.0 vs baseline 100.0" in p for p in problems)
    assert any("visual tokens 500.0 != baseline 512.0" in p for p in problems)
    assert any("2 failed samples" in p for p in problems)
    assert regression.compare({"b/full": ref["a/full"]}, ref) == ["b/full: not in the baseline (run with --update to add it)"]
