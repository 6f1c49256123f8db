"""Accuracy per question type for every method at 50%, 25% and 10% of the visual tokens.

    python scripts/testbed_table.py                                  # the shipped testbed checkpoints
    python scripts/testbed_table.py --checkpoints DIR1 DIR2 --limit 70 --out outputs/table.md

Each row is one lmms-eval run (through Python, so a failed run is an error here, not a silent
exit 0) of ``freres_synthetic`` with one checkpoint and one method: ``full``, then every other
registered method at each ``--budgets`` ratio. A budget a method cannot meet (``uniform`` below
one temporal slice) makes every sample fail; the row then says so instead of showing 0%.
Writes Markdown and CSV (``--out``, ``--out`` with ``.csv``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from freres_lmms.core import METHODS  # noqa: E402
from freres_lmms.data.synthetic import QTYPES, ensure_synthetic  # noqa: E402

def rows_to_run(budgets: list[float]) -> list[tuple[str, dict]]:
    runs = [("full", {})]
    runs += [(name, {"budget": b}) for name in METHODS if name != "full" for b in budgets]
    return runs


def evaluate(pretrained: str, method: str, knobs: dict, limit: int | None) -> dict:
    """One lmms-eval run; a table row."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager
    from transformers import AutoConfig

    from freres_lmms.data.checkpoints import resolve_pretrained
    from freres_lmms.lmms.families import FAMILY_CLASSES
    from freres_lmms.models import ADAPTERS

    path = resolve_pretrained(pretrained)
    model_type = AutoConfig.from_pretrained(path).model_type
    family = next(f for f, adapter in ADAPTERS.items() if adapter.model_type == model_type)
    model = FAMILY_CLASSES[family](pretrained=path, method=method, **knobs)
    out = simple_evaluate(model=model, tasks=["freres_synthetic"], limit=limit, log_samples=True,
                          task_manager=TaskManager(include_path=str(ROOT / "task_configs")))
    metrics = out["results"]["freres_synthetic"]
    records = [s["token_counts"][0] for s in out["samples"]["freres_synthetic"]]
    errors = [r["error"] for r in records if r.get("error")]
    kept = [r["visual_tokens_after"] for r in records if r.get("visual_tokens_after") is not None]
    before = [r["visual_tokens_before"] for r in records if r.get("visual_tokens_before") is not None]
    row = {"checkpoint": Path(pretrained).name, "method": method, "budget": knobs.get("budget", 1.0),
           "visual_tokens": round(sum(kept) / len(kept), 1) if kept else None,
           "of": round(sum(before) / len(before), 1) if before else None, "samples": len(records),
           "errors": len(errors)}
    if len(errors) == len(records):
        row["note"] = f"every sample failed: {errors[0]}"
        return row
    row.update({q: round(metrics[f"{q}_accuracy,none"], 1) for q in QTYPES})
    row["all"] = round(metrics["accuracy,none"], 1)
    row["note"] = f"{len(errors)} samples failed: {errors[0]}" if errors else ""
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", default=["testbed-qwen2vl", "testbed-qwen3vl"],
                        help="checkpoint dirs or testbed names")
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.5, 0.25, 0.1])
    parser.add_argument("--limit", type=int, default=None, help="first N test samples (types interleave)")
    parser.add_argument("--out", default=str(ROOT / "results" / "testbed.md"))
    args = parser.parse_args(argv)
    ensure_synthetic()
    import pandas as pd

    rows = [evaluate(ckpt, method, knobs, args.limit)
            for ckpt in args.checkpoints for method, knobs in rows_to_run(args.budgets)]
    table = pd.DataFrame(rows)
    table = table.astype(object).where(table.notna(), None)  # blank cells, not "nan"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False)
    text = ("# Testbed accuracy by question type (%), freres_synthetic test split\n\n"
            f"Command: `python scripts/testbed_table.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n"
            + table.to_markdown(index=False) + "\n")
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
