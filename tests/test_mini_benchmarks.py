"""Miniature real benchmarks (data/mini_benchmarks.py): lmms-eval's own task code runs offline on them
through our wrappers, reports the metric keys conf/benchmark names, and the data check accepts the layout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from freres_lmms.config import compose
from freres_lmms.data import mini_benchmarks
from freres_lmms.tables import datacheck

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mini_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("mini-hf")
    done = subprocess.run([sys.executable, "-m", "freres_lmms", "mini-benchmarks", "--hf-home", str(home)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return home


def offline_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LMMS_EVAL_DATASETS"))}
    return {**env, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.mark.parametrize("name", sorted(mini_benchmarks.BENCHMARKS))
def test_lmms_eval_task_runs_offline_through_our_wrapper(name, mini_home, checkpoints, tmp_path):
    """The benchmark's lmms-eval task (its YAML, utils.py, the datasets load) on the miniature, offline:
    exit 0, every row answered, the metric keys of conf/benchmark/<name>.yaml, 16 frames -> 8 slices of 8x8."""
    benchmark = compose(["experiment=adaretake_t4/qwen2_vl_7b", f"benchmark={name}"]).benchmark
    rows = mini_benchmarks.BENCHMARKS[name].rows()
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "freres_lmms", "eval", "--model", "full_qwen2vl", "--model_args",
                          f"pretrained={checkpoints['qwen2vl']},max_num_frames=16", "--tasks", ",".join(benchmark.tasks),
                          "--log_samples", "--output_path", str(out)],
                          cwd=tmp_path, env=offline_env(mini_home), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(next(out.rglob("*_results.json")).read_text())["results"]
    for metric in benchmark.metrics.values():
        for task in metric.tasks or [metric.task]:
            assert metric.key in results[task], (task, metric.key, results[task])
    samples = [json.loads(line) for path in out.rglob("*samples*.jsonl") for line in path.read_text().splitlines()]
    assert len(samples) == len(rows)
    assert {s["token_counts"][0]["visual_tokens_before"] for s in samples} == {8 * 64}
    assert not any(s["token_counts"][0].get("error") for s in samples)


@pytest.mark.parametrize("name", sorted(mini_benchmarks.BENCHMARKS))
def test_data_check_accepts_the_layout_and_names_what_is_removed(name, mini_home, tmp_path, monkeypatch):
    home = tmp_path / "hf"
    shutil.copytree(mini_home, home)
    for key, value in {"HF_HOME": home, "HF_HUB_CACHE": home / "hub", "HF_DATASETS_CACHE": home / "datasets"}.items():
        monkeypatch.setenv(key, str(value))
    benchmark = compose(["experiment=adaretake_t4/qwen2_vl_7b", f"benchmark={name}"]).benchmark
    assert datacheck.missing_data(benchmark) == []
    last = mini_benchmarks.BENCHMARKS[name].video_paths()[-1]  # one file removed: it is named
    (home / last).unlink()
    assert datacheck.missing_data(benchmark) == [datacheck.missing_video(benchmark)]
    assert str(home / last) in datacheck.missing_video(benchmark)
    for folder in {Path(p).parts[0] for p in mini_benchmarks.BENCHMARKS[name].video_paths()} - {"datasets"}:
        shutil.rmtree(home / folder)
    for path in mini_benchmarks.BENCHMARKS[name].video_paths():  # videos under HF_HOME/datasets (LongVideoBench)
        (home / path).unlink(missing_ok=True)
        if (home / path).parent.is_dir() and not any((home / path).parent.iterdir()):
            (home / path).parent.rmdir()
    needs = datacheck.missing_data(benchmark)
    assert needs and all(str(home) in n for n in needs), needs


def test_unknown_miniature_is_refused(tmp_path):
    with pytest.raises(KeyError, match="no miniature of 'nope'"):
        mini_benchmarks.write(tmp_path, ["nope"])


def test_benchmark_regression_against_the_stored_baseline(mini_home):
    """The issue's command on the miniature Video-MME: every method against
    results/regression/videomme-tiny_qwen2vl.json (token counts exact, metrics within its tolerance)."""
    done = subprocess.run(["make", "ci-regression", "benchmark=videomme", "model=tiny_qwen2vl", "limit=4"], cwd=ROOT,
                          env=offline_env(mini_home), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert "regression check passed: 13 checks" in done.stdout
    kept = ROOT / "outputs" / "regression" / "videomme-tiny_qwen2vl"
    assert len((kept / "uniform_budget=0.5" / "samples.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize("args, message", [
    (["model=tiny_qwen2vl", "limit=4"], "benchmark=<name> is required"),
    (["benchmark=videomme", "model=tiny_qwen2vl", "limit=0"], "limit must be a positive int"),
    (["benchmark=videomme", "model=tiny_qwen2vl", "limit=4", "baseline=/nonexistent.json"], "no baseline at"),
    (["benchmark=videomme", "model=tiny_qwen2vl", "limit=4"], "cannot run here; needs: "),
    (["benchmark=nope", "limit=4"], "cannot compose"),
])
def test_benchmark_regression_refuses_before_any_work(args, message, tmp_path):
    env = offline_env(tmp_path)  # an empty HF_HOME: no data
    done = subprocess.run([sys.executable, "-m", "freres_lmms", "regression", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]


def test_benchmark_regression_names_every_difference():
    from freres_lmms.benchmark_regression import compare

    row = {"metrics": {"overall": 50.0}, "visual_tokens": 256.0, "samples": 4, "errors": 0}
    baseline = {"tolerance": 5.0, "checks": {"uniform/budget=0.5": row}}
    assert compare({"uniform/budget=0.5": row}, baseline) == []
    assert compare({"uniform/budget=0.5": {**row, "metrics": {"overall": 54.0}}}, baseline) == []
    moved = compare({"uniform/budget=0.5": {**row, "metrics": {"overall": 56.0}, "visual_tokens": 255.0},
                     "freres/budget=0.5": row}, baseline)
    assert any("visual tokens 255.0 != baseline 256.0" in p for p in moved)
    assert any("overall 56.0 vs baseline 50.0 (tolerance 5)" in p for p in moved)
    assert any(p.startswith("freres/budget=0.5: not in the baseline") for p in moved)


def test_benchmark_frame_counts_are_lmms_evals_qwen_defaults():
    """conf/benchmark's frame counts say they are lmms-eval's Qwen wrappers' default: check that default."""
    import inspect

    from lmms_eval.models.simple.qwen2_5_vl import Qwen2_5_VL
    from lmms_eval.models.simple.qwen2_vl import Qwen2_VL
    from lmms_eval.models.simple.qwen3_vl import Qwen3_VL

    defaults = {inspect.signature(cls.__init__).parameters["max_num_frames"].default for cls in (Qwen2_VL, Qwen2_5_VL, Qwen3_VL)}
    for name in [*mini_benchmarks.BENCHMARKS, "activitynetqa"]:
        frames = compose(["experiment=adaretake_t4/qwen2_vl_7b", f"benchmark={name}"]).benchmark.frames
        assert {frames} == ({16} if name == "mvbench" else defaults), name  # MVBench's protocol is 16 frames


def test_judged_benchmark_is_a_clear_not_run_row(tmp_path, monkeypatch):
    """ActivityNet-QA scores with a GPT judge: no miniature; the data check names the judge."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for key in ("HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE"):
        monkeypatch.setenv(key, str(tmp_path / key))
    assert "activitynetqa" not in mini_benchmarks.BENCHMARKS
    needs = datacheck.missing(compose(["experiment=adaretake_t4/qwen2_vl_7b", "benchmark=activitynetqa"]))
    assert any("GPT judge" in n and "OPENAI_API_KEY" in n for n in needs)
