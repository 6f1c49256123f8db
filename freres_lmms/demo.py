"""``make demo``: evaluate full and uniform compression on the synthetic task through lmms-eval.

Uses the trained Qwen2-VL testbed shipped in the package (``pretrained=testbed-qwen2vl``),
builds the synthetic test videos if missing, runs the real ``lmms_eval`` CLI once per method
(each in its own output folder), and prints a table read back from lmms-eval's result files. The CLI exits 0 even when an evaluation fails, so a run counts
only if its results file exists.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from .data.checkpoints import testbed_checkpoint
from .data.synthetic import ensure_synthetic

ROOT = Path(__file__).resolve().parents[1]
TESTBED_NOTE = (
    "The checkpoint is the Qwen2-VL testbed (6.4 M parameters) trained from scratch on this task's\n"
    "training split; 25% is chance. Accuracy per question type, every method and budget:\n"
    "results/testbed.md (make testbed-table)."
)


def run_lmms_eval(model: str, model_args: str, out: Path, limit: int | None = None) -> dict:
    """Run the lmms_eval CLI on the synthetic task; return its results dict or raise."""
    cmd = [sys.executable, "-m", "lmms_eval", "--model", model, "--model_args", model_args,
           "--tasks", "freres_synthetic", "--include_path", str(ROOT / "task_configs"),
           "--output_path", str(out), "--log_samples", "--batch_size", "1"]
    if limit:
        cmd += ["--limit", str(limit)]
    subprocess.run(cmd, check=True, cwd=ROOT)
    found = sorted(out.rglob("*_results.json"))
    if not found:
        raise RuntimeError(f"lmms_eval wrote no results for {model} under {out}; see its log above")
    return json.loads(found[-1].read_text())


def summarize(method: str, results: dict) -> dict:
    metrics = results["results"]["freres_synthetic"]
    throughput = results.get("throughput", {})
    before = throughput.get("avg_visual_tokens_before", 0.0)
    after = throughput.get("avg_visual_tokens_after", 0.0)
    return {
        "method": method,
        "visual_tokens": round(after, 1),
        "compression_ratio": round(before / after, 2) if after else float("nan"),
        "accuracy": round(metrics["accuracy,none"], 1),
        **{category: round(metrics[f"{category}_accuracy,none"], 1) for category in ("spatial", "temporal", "mixed")},
        "compression_ms": round(1000 * throughput.get("avg_compression_seconds", 0.0), 3),
        "seconds": round(float(results.get("total_evaluation_time_seconds", 0.0)), 1),
        "sample_errors": throughput.get("avg_sample_errors", 0.0),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "outputs" / "demo"))
    parser.add_argument("--limit", type=int, default=None, help="first N samples only")
    args = parser.parse_args(argv)
    checkpoint = testbed_checkpoint("qwen2vl")
    ensure_synthetic()
    runs = {"full": "", "uniform": "budget=0.25"}
    rows = []
    for method, knobs in runs.items():
        model_args = ",".join(filter(None, [f"pretrained={checkpoint}", knobs]))
        out = Path(args.out) / method
        rows.append(summarize(method, run_lmms_eval(f"{method}_qwen2vl", model_args, out, args.limit)))
    import pandas as pd

    table = pd.DataFrame(rows).to_markdown(index=False)
    print("\nfreres-lmms demo: the Qwen2-VL testbed on freres_synthetic\n")
    print(table)
    print("\n" + TESTBED_NOTE)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table.md").write_text(table + "\n\n" + TESTBED_NOTE + "\n")


if __name__ == "__main__":
    main()
