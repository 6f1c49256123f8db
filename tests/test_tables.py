"""Table scripts: up-front data checks, rows that cannot run, one small table end to end on CPU."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from freres_lmms.config import compose
from freres_lmms.tables import datacheck, runner
from freres_lmms.tables.reproduce import main as reproduce


def test_missing_weights_and_data_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    cfg = compose(["experiment=freres_t2/qwen2_vl_7b_fourier"])
    needs = datacheck.missing(cfg)
    assert any("Qwen/Qwen2-VL-7B-Instruct" in n for n in needs)
    assert any("NExT" in n or "nextqa" in n.lower() for n in needs)
    # a cached snapshot with config and weights counts as present
    snapshot = tmp_path / "hub" / "models--Qwen--Qwen2-VL-7B-Instruct" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    assert datacheck.missing_model(cfg.model) is not None  # no weights yet
    (snapshot / "model.safetensors").write_bytes(b"")
    assert datacheck.missing_model(cfg.model) is None
    # the testbeds ship with the package; the synthetic task's data is in the repo once generated
    tiny = compose(["experiment=freres_t2/qwen2_vl_7b_fourier", "model=tiny", "benchmark=synthetic"])
    assert datacheck.missing_model(tiny.model) is None


def test_rows_that_cannot_run_say_why():
    assert runner.why_not_runnable({"backbone": "InternVL2-2B", "method": "model"}) == \
        "not run (needs InternVL2-2B: not a Qwen-VL family)"
    assert runner.why_not_runnable({"backbone": "Qwen2.5-VL-7B", "method": "VisionZip"}) == \
        "not run (needs VisionZip: not implemented here)"


def test_real_benchmark_rows_without_data_are_not_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert reproduce(["table=supp_s1", f"--root={tmp_path}"]) == 0
    frame = pd.read_csv(tmp_path / "results" / "tables" / "supp_s1.csv").set_index("row")
    assert frame.loc["vanilla", "status"].startswith("not run (needs Qwen/Qwen2.5-VL-7B-Instruct weights")
    assert frame.loc["ratio2_visionzip", "status"] == "not run (needs VisionZip: not implemented here)"
    assert frame.loc["vanilla", "MVBench (paper)"] == 63.0  # the paper's number stays beside the missing one


@pytest.mark.slow
def test_table1_end_to_end_on_the_tiny_models(tmp_path, monkeypatch):
    args = ["table=1", "model=tiny", "benchmark=synthetic", "run.limit=7", "run.device=cpu", f"--root={tmp_path}"]
    assert reproduce(args) == 0
    name = "freres_t1-tiny-synthetic-limit7"
    frame = pd.read_csv(tmp_path / "results" / "tables" / f"{name}.csv").set_index("row")
    assert frame.loc["internvl2_2b", "status"] == "not run (needs InternVL2-2B: not a Qwen-VL family)"
    ran = ["qwen2_vl_2b_vanilla", "qwen2_vl_2b_fourier", "qwen2_vl_2b_freres_compact",
           "qwen3_vl_4b_vanilla", "qwen3_vl_4b_fourier", "qwen3_vl_4b_freres_compact"]
    assert (frame.loc[ran, "status"] == "ok").all()
    assert (frame.loc[ran, "samples"] == 7).all()
    assert frame.loc["qwen2_vl_2b_vanilla", "visual tokens (ours)"] == 512  # 8 slices of 8x8 on the Qwen2-VL testbed
    assert frame.loc["qwen3_vl_4b_vanilla", "visual tokens (ours)"] == 392  # 8 slices of 7x7 on the Qwen3-VL testbed
    # the tokens computed without a model are what the runs emitted (shape-determined methods)
    for row in ("qwen2_vl_2b_vanilla", "qwen2_vl_2b_fourier", "qwen3_vl_4b_fourier"):
        assert frame.loc[row, "visual tokens (measured)"] == frame.loc[row, "visual tokens (ours)"]
    assert frame.loc["qwen2_vl_2b_freres_compact", "visual tokens (ours)"] <= frame.loc["qwen2_vl_2b_fourier", "visual tokens (ours)"]
    assert frame.loc["qwen2_vl_2b_vanilla", "synthetic accuracy (ours)"] >= 80  # the trained testbed at full tokens
    assert frame.loc["qwen2_vl_2b_vanilla", "Avg. (paper)"] == 61.43
    markdown = (tmp_path / "results" / "tables" / f"{name}.md").read_text()
    assert "not a Qwen-VL family" in markdown and "synthetic accuracy" in markdown
    # one folder per row and benchmark, with the resolved config and lmms-eval's output
    folder = tmp_path / "outputs" / "tables" / name / "qwen2_vl_2b_fourier" / "synthetic"
    assert {"config.yaml", "results.json", "samples.jsonl", "metrics.json"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "metrics.json").read_text())["config"]["method"]["name"] == "fourier"

    # a second run resumes from the row folders: nothing is evaluated again
    def no_evaluation(*_, **__):
        raise AssertionError("a finished row was evaluated again")

    monkeypatch.setattr(runner, "evaluate_row", no_evaluation)
    assert reproduce(args) == 0
    again = pd.read_csv(tmp_path / "results" / "tables" / f"{name}.csv").set_index("row")
    assert again.loc[ran, "synthetic accuracy (ours)"].equals(frame.loc[ran, "synthetic accuracy (ours)"])

    # --force recomputes; a row that fails is reported in its row and the others go on
    def fail_fourier(cfg, method, knobs, folder, models):
        if method == "fourier":
            raise RuntimeError("planted failure")
        return json.loads((folder / "metrics.json").read_text())

    monkeypatch.setattr(runner, "evaluate_row", fail_fourier)
    assert reproduce([*args, "--force"]) == 1
    failed = pd.read_csv(tmp_path / "results" / "tables" / f"{name}.csv").set_index("row")
    assert failed.loc["qwen2_vl_2b_fourier", "status"] == "failed: RuntimeError: planted failure"
    assert failed.loc["qwen2_vl_2b_vanilla", "status"] == "ok"
