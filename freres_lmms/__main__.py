"""``python -m freres_lmms <command>``: eval | checkpoints | synthetic | demo | regression | tokens | budget-match | mini-benchmarks | reproduce."""

from __future__ import annotations

import sys

COMMANDS = {
    "eval": ("freres_lmms.evaluate", "lmms-eval's evaluation, exiting non-zero on a bad configuration or a failed sample"),
    "checkpoints": ("freres_lmms.data.checkpoints", "write the tiny local checkpoints"),
    "synthetic": ("freres_lmms.data.synthetic", "generate the synthetic video benchmark"),
    "demo": ("freres_lmms.demo", "evaluate full and uniform compression on the synthetic task"),
    "regression": ("freres_lmms.regression", "compare every method on the trained testbed with the stored baseline"),
    "tokens": ("freres_lmms.tokens:tokens_main", "visual tokens an experiment preset emits (JSON line, no model): experiment=<preset>"),
    "budget-match": ("freres_lmms.tokens:budget_match_main", "match each baseline's primary knob to its target: experiment=<preset> | table=<id>"),
    "mini-benchmarks": ("freres_lmms.data.mini_benchmarks", "write miniature real benchmarks in lmms-eval's offline layout (a test fixture): --hf-home DIR"),
    "reproduce": ("freres_lmms.tables.reproduce:main", "regenerate a paper table: table=<id> [model=tiny benchmark=synthetic ...]"),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        lines = [f"  {name:13s} {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: python -m freres_lmms <command> [options]\n\ncommands:\n" + "\n".join(lines))
        sys.exit(0 if not argv or argv[0] in ("-h", "--help") else 2)
    import importlib

    module, _, function = COMMANDS[argv[0]][0].partition(":")
    status = getattr(importlib.import_module(module), function or "main")(argv[1:])
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
