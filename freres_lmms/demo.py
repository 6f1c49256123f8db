"""``make demo``: evaluate full and uniform compression on the synthetic task through lmms-eval.

Uses the trained Qwen2-VL testbed shipped in the package (``pretrained=testbed-qwen2vl``),
builds the synthetic test videos if missing, and evaluates ``full_qwen2vl`` and
``uniform_qwen2vl`` (25% of the visual tokens) through lmms-eval's ``simple_evaluate`` in this
process, on a balanced subset (``--limit``, 70 by default: 10 per question type, since the types
interleave) with only our task folder indexed (lmms-eval's 3,000-odd task files are not read).
Each method's results go to their own folder; a table is printed, then the command for the whole
350-sample split. A failed evaluation raises: nothing here can end silently.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .data.checkpoints import testbed_checkpoint
from .data.synthetic import ensure_synthetic

ROOT = Path(__file__).resolve().parents[1]
TESTBED_NOTE = (
    "The checkpoint is the Qwen2-VL testbed (6.4 M parameters) trained from scratch on this task's\n"
    "training split; 25% is chance. Accuracy per question type, every method and budget:\n"
    "results/testbed.md (make testbed-table)."
)
FULL_RUN = ("python -m freres_lmms eval --model uniform_qwen2vl --model_args pretrained=testbed-qwen2vl,budget=0.25 "
            "--tasks freres_synthetic --output_path outputs/eval --log_samples")


def run_lmms_eval(model: str, model_args: str, out: Path, limit: int | None = None, task_manager=None) -> dict:
    """One lmms-eval evaluation of the synthetic task in this process; its results, also saved under ``out``."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    task_manager = task_manager or TaskManager(include_path=str(ROOT / "task_configs"), include_defaults=False)
    started = time.perf_counter()
    results = simple_evaluate(model=model, model_args=model_args, tasks=["freres_synthetic"], limit=limit,
                              batch_size=1, task_manager=task_manager)
    if not results or "freres_synthetic" not in results.get("results", {}):
        raise RuntimeError(f"lmms-eval returned no results for {model}")
    results["total_evaluation_time_seconds"] = time.perf_counter() - started  # the model's loading included
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({k: results[k] for k in ("results", "throughput") if k in results},
                                                 indent=1, default=str))
    return results


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
    parser.add_argument("--limit", type=int, default=70, help="first N samples (types interleave; 0: all 350)")
    args = parser.parse_args(argv)
    from lmms_eval.tasks import TaskManager

    checkpoint = testbed_checkpoint("qwen2vl")
    ensure_synthetic()
    task_manager = TaskManager(include_path=str(ROOT / "task_configs"), include_defaults=False)
    runs = {"full": "", "uniform": "budget=0.25"}
    rows = []
    for method, knobs in runs.items():
        model_args = ",".join(filter(None, [f"pretrained={checkpoint}", knobs]))
        results = run_lmms_eval(f"{method}_qwen2vl", model_args, Path(args.out) / method, args.limit or None, task_manager)
        rows.append(summarize(method, results))
    import pandas as pd

    table = pd.DataFrame(rows).to_markdown(index=False)
    samples = f"the first {args.limit} test samples" if args.limit else "the 350 test samples"
    print(f"\nfreres-lmms demo: the Qwen2-VL testbed on freres_synthetic ({samples})\n")
    print(table)
    print("\n" + TESTBED_NOTE)
    print(f"\nThe whole split, with lmms-eval's output files and a non-zero exit on any failure:\n    {FULL_RUN}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table.md").write_text(table + "\n\n" + TESTBED_NOTE + "\n")


if __name__ == "__main__":
    main()
