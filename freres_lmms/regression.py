"""Regression checks on the trained testbed: accuracy and visual tokens per method, against a baseline.

``python -m freres_lmms regression`` (``make ci-regression``) evaluates every registered method
at a few budgets on the first ``limit`` samples of the synthetic test split, on both testbed
checkpoints, through lmms-eval (the real path: mp4 decoding, processor, wrapper, adapter), and
compares accuracy per question type and the mean visual-token count with
``results/regression/baseline.json``. Token counts must match exactly; an accuracy may move by
at most ``tolerance`` points (the runs are deterministic on one machine; the tolerance absorbs
float differences across platforms: one flipped answer of 20 is 5 points). A method that breaks
positions or keeps the wrong tokens moves accuracies by far more (``tests/test_regression.py``
plants such methods and checks that this comparison fails). ``--update`` rewrites the baseline
after an intended change; the diff of that file is then the review. With Hydra-style arguments
(``benchmark=videomme model=qwen2_vl_7b limit=50``) it checks a real benchmark's subset instead
(``benchmark_regression``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .core import METHODS, Method
from .data.synthetic import QTYPES, ensure_synthetic
from .synthetic_eval import evaluate

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "results" / "regression" / "baseline.json"
CHECKPOINTS = ("testbed-qwen2vl", "testbed-qwen3vl")
BUDGETS = (0.5, 0.25)
LIMIT = 140  # the first 140 test samples: 20 per question type (types interleave)
TOLERANCE = 10.0  # accuracy points per question type (two answers of 20)


def runs(methods=None, budgets=BUDGETS) -> list[tuple[str, dict]]:
    """(method, knobs) of every check: ``full``, then each other method at each budget."""
    names = sorted(methods or METHODS)
    full = [("full", {})] if "full" in names else []
    return full + [(m, {"budget": b}) for m in names if m != "full" for b in budgets]


def key(checkpoint: str, method: str, knobs: dict) -> str:
    return "/".join([checkpoint, method] + [f"{k}={v}" for k, v in sorted(knobs.items())])


def measure(checkpoint: str, method: str | Method, knobs: dict | None = None, limit: int = LIMIT) -> dict:
    """One check's numbers, on the CPU (the baseline's device): see ``synthetic_eval.evaluate``."""
    row = evaluate(checkpoint, method, knobs, limit, device="cpu")
    return {k: row[k] for k in (*QTYPES, "all", "visual_tokens", "kv_visual_tokens", "errors", "note") if k in row}


def _one_thread_each(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _measure_check(check: tuple) -> dict:
    return measure(*check)


def measure_all(checks: list[tuple[str, str | Method, dict]], limit: int = LIMIT, jobs: int = 1) -> dict:
    """``{key: numbers}`` of every ``(checkpoint, method, knobs)``; ``jobs`` > 1 measures in that many
    processes, each with its share of the CPU's threads (small models use threads poorly: two
    one-thread processes finish two checks in 0.7 of the time two threads take, on the 2-core CPU)."""
    names = [key(c, m if isinstance(m, str) else m.name, k) for c, m, k in checks]
    if jobs <= 1:
        return {name: measure(c, m, k, limit) for name, (c, m, k) in zip(names, checks)}
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread_each,
                             initargs=(threads,)) as pool:
        rows = list(pool.map(_measure_check, [(c, m, k, limit) for c, m, k in checks]))
    return dict(zip(names, rows))


def compare(measured: dict, baseline: dict, tolerance: float = TOLERANCE) -> list[str]:
    """Readable differences beyond tolerance: one line per check and quantity (empty: all within)."""
    problems = []
    for name, row in measured.items():
        if name not in baseline:
            problems.append(f"{name}: not in the baseline (run with --update to add it)")
            continue
        ref = baseline[name]
        for count in ("visual_tokens", "kv_visual_tokens"):
            if row.get(count) != ref.get(count):
                problems.append(f"{name}: {count.replace('_', ' ')} {row.get(count)} != baseline {ref.get(count)}")
        if row.get("errors") != ref.get("errors"):
            problems.append(f"{name}: {row.get('errors')} failed samples, baseline {ref.get('errors')} ({row.get('note')})")
        for q in (*QTYPES, "all"):
            if q in ref and (row.get(q) is None or abs(row[q] - ref[q]) > tolerance):
                problems.append(f"{name}: {q} accuracy {row.get(q)} vs baseline {ref[q]} (tolerance {tolerance:g})")
    return problems


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else argv
    if any("=" in arg and not arg.startswith("-") for arg in argv):  # benchmark=... model=... limit=N
        from .benchmark_regression import main as benchmark_main

        return benchmark_main(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="write the measured numbers as the new baseline")
    parser.add_argument("--limit", type=int, default=LIMIT)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    parser.add_argument("--baseline", default=str(BASELINE))
    parser.add_argument("--jobs", type=int, default=1, help="checks measured at once, in that many processes")
    args = parser.parse_args(argv)
    ensure_synthetic()
    measured = measure_all([(c, m, k) for c in CHECKPOINTS for m, k in runs()], args.limit, args.jobs)
    path = Path(args.baseline)
    if args.update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"limit": args.limit, "checks": measured}, indent=1) + "\n")
        print(f"baseline written: {path} ({len(measured)} checks)")
        return
    baseline = json.loads(path.read_text())
    if baseline["limit"] != args.limit:
        sys.exit(f"the baseline was measured on {baseline['limit']} samples, not {args.limit}")
    problems = compare(measured, baseline["checks"], args.tolerance)
    header = f"{'check':44s} {'all':>6s} {'base':>6s} {'tokens':>7s}"
    print(header)
    for name, row in measured.items():
        ref = baseline["checks"].get(name, {})
        print(f"{name:44s} {row.get('all', float('nan')):6.1f} {ref.get('all', float('nan')):6.1f} {row['visual_tokens']!s:>7s}")
    if problems:
        sys.exit("regression check failed:\n  " + "\n  ".join(problems))
    print(f"regression check passed: {len(measured)} checks within {args.tolerance:g} points, token counts exact")


if __name__ == "__main__":
    main()
