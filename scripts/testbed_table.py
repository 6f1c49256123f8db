"""Accuracy per question type for every method at 50%, 25% and 10% of the visual tokens (long task: and 5%).

    python scripts/testbed_table.py                                  # the shipped testbed checkpoints
    python scripts/testbed_table.py --task long                      # the long testbeds: results/testbed-long.md + png
    python scripts/testbed_table.py --checkpoints DIR1 DIR2 --limit 70 --out outputs/table.md
    python scripts/testbed_table.py --methods cdpruner --limit 140 --out results/cdpruner_relevance.md \
        --variants relevance_sign=official,relevance_text=question relevance_sign=positive,relevance_text=all

Each row is one lmms-eval run (``freres_lmms.synthetic_eval.evaluate``: through Python, so a
failed run is an error here, not a silent exit 0) of ``freres_synthetic`` with one checkpoint and one method: ``full``, then every other
registered method (or each of ``--methods``) at each ``--budgets`` ratio, once per ``--variants``
entry (knobs added to every run, ``key=value,key=value``). A budget a method cannot meet (``uniform`` below
one temporal slice) makes every sample fail; the row then says so instead of showing 0%.
Writes Markdown and CSV (``--out``, ``--out`` with ``.csv``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from freres_lmms.regression import runs  # noqa: E402
from freres_lmms.data.synthetic import ensure_synthetic  # noqa: E402
from freres_lmms.data.tasks import TASKS  # noqa: E402
from freres_lmms.synthetic_eval import evaluate  # noqa: E402

DEFAULTS = {  # per task: checkpoints, budgets, output
    "short": (["testbed-qwen2vl", "testbed-qwen3vl"], [0.5, 0.25, 0.1], ROOT / "results" / "testbed.md"),
    "long": (["testbed-long-qwen2vl", "testbed-long-qwen3vl"], [0.5, 0.25, 0.1, 0.05], ROOT / "results" / "testbed-long.md"),
}

def rows_to_run(budgets: list[float], methods: list[str] | None = None,
                variants: list[dict] | None = None) -> list[tuple[str, dict]]:
    """``full``, then every other registered method at each budget (the regression checks' order),
    each with every variant's knobs."""
    return [(method, {**knobs, **variant}) for method, knobs in runs(methods, budgets=budgets)
            for variant in (variants or [{}])]


def parse_variant(text: str) -> dict:
    """``key=value,key=value`` -> knobs, values typed as lmms-eval types model_args."""
    from lmms_eval.utils import simple_parse_args_string

    return simple_parse_args_string(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=list(TASKS), default="short", help="short: freres_synthetic; long: freres_synthetic_long")
    parser.add_argument("--checkpoints", nargs="+", default=None, help="checkpoint dirs or testbed names (default: the task's testbeds)")
    parser.add_argument("--budgets", nargs="+", type=float, default=None, help="default: 0.5 0.25 0.1 (long: and 0.05)")
    parser.add_argument("--methods", nargs="+", default=None, help="registered method names (default: all)")
    parser.add_argument("--variants", nargs="+", type=parse_variant, default=None,
                        help="knob sets, each key=value,key=value, run for every method and budget")
    parser.add_argument("--limit", type=int, default=None, help="first N test samples (types interleave)")
    parser.add_argument("--include-path", default=None, help="task_configs folder (default: the repo's)")
    parser.add_argument("--out", default=None, help="default: results/testbed.md (long: results/testbed-long.md)")
    args = parser.parse_args(argv)
    checkpoints, budgets, out = DEFAULTS[args.task]
    checkpoints, budgets = args.checkpoints or checkpoints, args.budgets or budgets
    out = Path(args.out or out)
    if args.include_path is None:
        ensure_synthetic(task=args.task)
    import pandas as pd

    rows = []
    for ckpt in checkpoints:
        for method, knobs in rows_to_run(budgets, args.methods, args.variants):
            row = evaluate(ckpt, method, knobs, args.limit, task=args.task, include_path=args.include_path)
            extra = {k: v for k, v in knobs.items() if k != "budget"}
            rows.append({**row, "knobs": ",".join(f"{k}={v}" for k, v in extra.items())} if extra else row)
    table = pd.DataFrame(rows)
    table = table.astype(object).where(table.notna(), None)  # blank cells, not "nan"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False)
    spec = TASKS[args.task]
    if args.task != "short":  # accuracy curves per question group, one png per checkpoint
        from freres_lmms.tables.curves import plot_curves

        for ckpt in checkpoints:
            name = Path(ckpt).name
            plot_curves([r for r in rows if r["checkpoint"] == name], spec.groups,
                        out.with_name(f"{out.stem}-{name}.png"), f"{spec.name}: {name}")
    text = (f"# Testbed accuracy by question type (%), {spec.name} test split\n\n"
            f"Command: `python scripts/testbed_table.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n"
            + table.to_markdown(index=False) + "\n")
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
