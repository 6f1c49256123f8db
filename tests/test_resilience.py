"""Evaluation that survives crashes and bad input: resume after SIGKILL, memory flat in the number of
samples, bad configurations refused before any work with a non-zero exit, failed samples counted
apart from the answered ones."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from freres_lmms import evaluate
from freres_lmms.lmms.store import stored_count
from freres_lmms.data.synthetic import generate

PROBE = Path(__file__).with_name("eval_probe.py")


def probe_task(root: Path, docs: list[dict], name: str) -> Path:
    """A copy of freres_synthetic named ``name`` over ``docs`` (absolute video paths)."""
    src = Path(__file__).parents[1] / "task_configs" / "freres_synthetic"
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "test.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    (root / "utils.py").write_text((src / "utils.py").read_text())
    (root / f"{name}.yaml").write_text((src / "freres_synthetic.yaml").read_text().replace("task: freres_synthetic", f"task: {name}"))
    return root


def run_probe(checkpoint, task_dir, task, out, *extra, wait=True):
    cmd = [sys.executable, str(PROBE), str(checkpoint), str(task_dir), task, str(out), *extra]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(cmd, check=True, capture_output=True)
    return json.loads(Path(out).read_text())


def comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.endswith("_seconds")}


def test_a_killed_run_resumes_without_recomputing_or_losing_a_sample(tmp_path, checkpoints, videos):
    docs = [dict(videos[i % len(videos)]) for i in range(14)]
    task = probe_task(tmp_path / "task", docs, "freres_probe_resume")
    store = tmp_path / "store.sqlite"
    first = run_probe(checkpoints["qwen2vl"], task, "freres_probe_resume", tmp_path / "a.json", f"resume={store}",
                      "slow=1.5", wait=False)
    deadline = time.time() + 240
    while stored_count(store) < 4 and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    kept = stored_count(store)
    assert 4 <= kept < 14, f"the kill came at {kept} stored samples of 14"
    resumed = run_probe(checkpoints["qwen2vl"], task, "freres_probe_resume", tmp_path / "b.json", f"resume={store}")
    assert resumed["computed"] == 14 - kept  # no stored sample computed again
    assert stored_count(store) == 14  # none lost
    fresh = run_probe(checkpoints["qwen2vl"], task, "freres_probe_resume", tmp_path / "c.json")
    assert fresh["computed"] == 14
    assert resumed["answers"] == fresh["answers"]
    assert [comparable(r) for r in resumed["records"]] == [comparable(r) for r in fresh["records"]]
    assert resumed["records"][0]["visual_tokens_after"] == 128  # stored samples keep their token counts
    assert resumed["metrics"] == fresh["metrics"]
    again = run_probe(checkpoints["qwen2vl"], task, "freres_probe_resume", tmp_path / "d.json", f"resume={store}")
    assert again["computed"] == 0 and again["throughput"]["avg_visual_tokens_after"] == 128


def test_memory_does_not_grow_with_the_number_of_samples(tmp_path, checkpoints):
    """Ten times the samples of 448x448 video: the peak is the same within a few MB (each sample's
    decoded clip is 8 x 448 x 448 x 3 bytes, 4.8 MB, so holding 70 would add over 300 MB)."""
    data = generate(tmp_path / "videos", count=7, frames=8, fps=2, size=448)
    docs = [json.loads(line) for line in data.read_text().splitlines()]
    for doc in docs:
        doc["video"] = str(tmp_path / "videos" / doc["video"])
    peaks = {}
    for n in (7, 70):
        task = probe_task(tmp_path / f"task{n}", [docs[i % 7] for i in range(n)], f"freres_probe_memory{n}")
        peaks[n] = run_probe(checkpoints["qwen2vl"], task, f"freres_probe_memory{n}", tmp_path / f"m{n}.json")["peak_rss_mb"]
    assert peaks[70] - peaks[7] < 40, peaks


BAD = [
    ("budget=0", "budget 0: a token count must be at least 1"),
    ("budget=-1", "budget -1: a token count must be at least 1"),
    ("budget=1.5", "budget 1.5: a retention ratio must lie in (0, 1]"),
    ("budget=abc", "got 'abc'"),
    ("max_num_frames=0", "max_num_frames must be an integer >= 1, got 0"),
    ("method=magic", "unknown compression method 'magic'"),
    ("pretrained=/nonexistent", "pretrained=/nonexistent: no such checkpoint directory"),
    ("fps=0", "fps must be a number > 0"),
    ("frame_encoding=triple", "frame_encoding must be one of paired, per_frame"),
    ("keep_dropped_timestamps=maybe", "keep_dropped_timestamps must be true or false"),
]


@pytest.mark.parametrize("model_args, message", BAD)
def test_a_bad_configuration_exits_2_before_any_work(model_args, message, checkpoints, capsys):
    args = f"pretrained={checkpoints['qwen2vl']},{model_args}" if "pretrained" not in model_args else model_args
    status = evaluate.main(["--model", "vtc_qwen2vl", "--model_args", args, "--tasks", "freres_synthetic"])
    assert status == 2 and message in capsys.readouterr().err


def test_missing_task_data_names_the_command_that_writes_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(evaluate.TASK_DATA, "freres_synthetic", (tmp_path / "test.jsonl", "make synthetic"))
    assert evaluate.main(["--model", "full_qwen2vl", "--tasks", "freres_synthetic"]) == 2
    assert "make synthetic" in capsys.readouterr().err


def test_batch_size_in_model_args_wins_over_the_cli_default(checkpoints):
    from lmms_eval.models import get_model

    lm = get_model("full_qwen2vl").create_from_arg_string(f"pretrained={checkpoints['qwen2vl']},batch_size=4,device=cpu",
                                                           {"batch_size": 1, "max_batch_size": None, "device": None})
    assert lm.batch_size == 4


def test_a_failed_sample_makes_the_eval_command_exit_1(tmp_path, checkpoints, videos, capsys):
    """The run finishes and writes its metrics over the answered sample; the exit status says one failed."""
    docs = [dict(videos[0]), dict(videos[1], video=str(tmp_path / "missing.mp4"))]
    task = probe_task(tmp_path / "task", docs, "freres_probe_failed")
    status = evaluate.main(["--model", "full_qwen2vl", "--model_args", f"pretrained={checkpoints['qwen2vl']},max_num_frames=8,device=cpu",
                            "--tasks", "freres_probe_failed", "--include_path", str(task)])
    out = capsys.readouterr()
    assert status == 1 and "1 sample(s) failed" in out.err
    assert "answered" in out.out
    assert "Running generate_until requests" in out.out  # lmms-eval's INFO lines, as its CLI shows them


def samples_by_doc(out: Path) -> dict:
    files = sorted(out.rglob("*_samples_*.jsonl"))
    assert files, f"no samples file under {out}"
    rows = [json.loads(line) for line in files[-1].read_text().splitlines()]
    return {row["doc_id"]: (row["filtered_resps"], comparable(row["token_counts"][0])) for row in rows}


def test_two_processes_give_what_one_gives(tmp_path, checkpoints, videos):
    """torchrun with 2 CPU processes (gloo): lmms-eval shards the documents by rank and gathers them;
    every answer and record equals a single process's."""
    task = probe_task(tmp_path / "task", [dict(videos[i % len(videos)]) for i in range(10)], "freres_probe_ranks")
    common = ["-m", "freres_lmms", "eval", "--model", "uniform_qwen2vl", "--model_args",
              f"pretrained={checkpoints['qwen2vl']},max_num_frames=8,stride=2,max_new_tokens=4,device=cpu",
              "--tasks", "freres_probe_ranks", "--include_path", str(task), "--log_samples"]
    torchrun = Path(sys.executable).with_name("torchrun")
    for name, launcher in (("one", [sys.executable]), ("two", [str(torchrun), "--nproc_per_node", "2"])):
        done = subprocess.run([*launcher, *common, "--output_path", str(tmp_path / name)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    one, two = samples_by_doc(tmp_path / "one"), samples_by_doc(tmp_path / "two")
    assert sorted(one) == list(range(10)) and one == two
