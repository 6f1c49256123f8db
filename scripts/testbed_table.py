"""Accuracy per question type for every method at 50%, 25% and 10% of the visual tokens.

    python scripts/testbed_table.py                                  # the shipped testbed checkpoints
    python scripts/testbed_table.py --checkpoints DIR1 DIR2 --limit 70 --out outputs/table.md

Each row is one lmms-eval run (``freres_lmms.synthetic_eval.evaluate``: through Python, so a
failed run is an error here, not a silent exit 0) of ``freres_synthetic`` with one checkpoint and one method: ``full``, then every other
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

from freres_lmms.regression import runs  # noqa: E402
from freres_lmms.data.synthetic import ensure_synthetic  # noqa: E402
from freres_lmms.synthetic_eval import evaluate  # noqa: E402

def rows_to_run(budgets: list[float]) -> list[tuple[str, dict]]:
    """``full``, then every other registered method at each budget (the regression checks' order)."""
    return runs(budgets=budgets)


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
