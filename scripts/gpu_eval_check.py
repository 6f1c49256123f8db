"""The ``eval`` command on a GPU, as a user runs it: exit status, resume after SIGKILL, device_map.

    python scripts/gpu_eval_check.py [--limit N] [--out results/gpu_eval_check.json]

Runs ``python -m freres_lmms eval --model freres_qwen2vl`` on the trained Qwen2-VL testbed
(``budget=0.25``) over the synthetic task, each step in its own process:

* ``batch8``: batches of 8, wall time and accuracy;
* ``batch1``: batches of 1, the reference for resuming (a batch's padding can move a bf16 logit,
  so the comparison keeps the batch size);
* ``killed`` + ``resumed``: ``resume=PATH``, SIGKILL once a third of the samples are stored, then
  the same command again: how many samples it computed, and its answers and records against
  ``batch1``'s;
* ``device_map``: ``device_map=auto,max_memory=...`` (the path for checkpoints larger than one GPU),
  answers against ``batch8``'s;
* ``bad_config``: ``budget=0``, which must exit 2 before any work.

Writes every command, exit status, wall time and comparison to ``--out`` with the device's name.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from freres_lmms.lmms.store import stored_count

ROOT = Path(__file__).resolve().parents[1]
MODEL_ARGS = "pretrained=testbed-qwen2vl,budget=0.25,device=cuda"


def command(model_args: str, out: Path, limit: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "freres_lmms", "eval", "--model", "freres_qwen2vl", "--model_args", model_args,
           "--tasks", "freres_synthetic", "--output_path", str(out), "--log_samples"]
    return cmd + (["--limit", str(limit)] if limit else [])


def outputs(folder: Path) -> dict:
    """Accuracy, answers and per-sample records of one run's lmms-eval output folder."""
    results = sorted(folder.rglob("*results.json"))
    samples = sorted(folder.rglob("*samples_freres_synthetic*.jsonl"))
    if not results or not samples:
        return {}
    metrics = json.loads(results[-1].read_text())["results"]["freres_synthetic"]
    rows = sorted((json.loads(line) for line in samples[-1].read_text().splitlines()), key=lambda r: r["doc_id"])
    answers = [r["filtered_resps"][0] for r in rows]
    records = [{k: v for k, v in r["token_counts"][0].items() if not k.endswith("_seconds")} for r in rows]
    return {"metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}, "answers": answers,
            "records": records}


def run(name: str, cmd: list[str], log: dict) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    step = {"command": " ".join(cmd[1:]), "exit_status": proc.returncode,
            "wall_seconds": round(time.perf_counter() - start, 1), "stdout_tail": proc.stdout[-1500:],
            "stderr_tail": proc.stderr[-1500:]}
    # lmms-eval logs to stdout, the progress bars go to stderr
    hits = re.findall(r"resume: (\d+) of (\d+) samples", proc.stdout + proc.stderr)
    if hits:
        step["answered_from_store"] = sum(int(a) for a, _ in hits)
        step["requests"] = sum(int(b) for _, b in hits)
    log[name] = step
    print(name, {k: v for k, v in step.items() if not k.endswith("_tail")}, flush=True)
    if proc.returncode:
        print(proc.stdout[-2000:], proc.stderr[-2000:], flush=True)
    return step


def agreement(a: dict, b: dict) -> dict:
    if not a or not b:
        return {"compared": False}
    same = sum(x == y for x, y in zip(a["answers"], b["answers"]))
    return {"samples": len(a["answers"]), "same_answers": same, "same_records": a["records"] == b["records"],
            "same_metrics": a["metrics"] == b["metrics"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="samples (default: the whole test split, 350)")
    parser.add_argument("--work", default="outputs/gpu_eval_check")
    parser.add_argument("--out", default="results/gpu_eval_check.json")
    args = parser.parse_args()
    work = ROOT / args.work
    shutil.rmtree(work, ignore_errors=True)
    log: dict = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                 "torch": torch.__version__, "model_args": MODEL_ARGS, "steps": {}}
    steps = log["steps"]
    run("batch8", command(f"{MODEL_ARGS},batch_size=8", work / "batch8", args.limit), steps)
    run("batch1", command(f"{MODEL_ARGS},batch_size=1", work / "batch1", args.limit), steps)

    store = work / "store.sqlite"
    resumable = command(f"{MODEL_ARGS},batch_size=1,resume={store}", work / "resumed", args.limit)
    total = args.limit or 350
    start = time.perf_counter()
    proc = subprocess.Popen(resumable, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while stored_count(store) < total // 3 and proc.poll() is None and time.perf_counter() - start < 400:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps["killed"] = {"command": " ".join(resumable[1:]), "signal": "SIGKILL", "stored_at_kill": stored_count(store),
                       "wall_seconds": round(time.perf_counter() - start, 1)}
    print("killed", steps["killed"], flush=True)
    resumed = run("resumed", resumable, steps)
    resumed["computed"] = resumed.get("requests", 0) - resumed.get("answered_from_store", 0)
    resumed["stored_after"] = stored_count(store)

    run("device_map", command(f"{MODEL_ARGS},batch_size=8,device_map=auto,max_memory=40GiB", work / "device_map",
                              args.limit), steps)
    bad = run("bad_config", command(MODEL_ARGS.replace("budget=0.25", "budget=0"), work / "bad", args.limit), steps)
    bad["refused_before_work"] = bad["exit_status"] == 2 and not (work / "bad").exists()

    found = {name: outputs(work / name) for name in ("batch8", "batch1", "resumed", "device_map")}
    for name, found_run in found.items():
        steps[name]["metrics"] = found_run.get("metrics")
    log["resumed_vs_batch1"] = agreement(found["resumed"], found["batch1"])
    log["device_map_vs_batch8"] = agreement(found["device_map"], found["batch8"])
    log["batch1_vs_batch8"] = agreement(found["batch1"], found["batch8"])
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(log, indent=1) + "\n")
    print(json.dumps({k: v for k, v in log.items() if k != "steps"}, indent=1))


if __name__ == "__main__":
    main()
