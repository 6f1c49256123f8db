"""One lmms-eval run of the synthetic task: a checkpoint, a method, a row of accuracies per question type.

Shared by ``scripts/testbed_table.py`` (the table of every method and budget) and
``freres_lmms.regression`` (the CI checks against a stored baseline). The run goes through
lmms-eval in Python, so a failure is an error here, not the CLI's silent exit 0.
"""

from __future__ import annotations

from pathlib import Path

from .core import Method
from .data.synthetic import QTYPES

ROOT = Path(__file__).resolve().parents[1]


def evaluate(checkpoint: str, method: str | Method, knobs: dict | None = None, limit: int | None = None,
             device: str | None = None) -> dict:
    """Accuracy (%) per question type and overall, mean visual tokens before/after, failed samples.

    ``method`` is a registered name (with ``knobs``) or a ``Method`` instance. When every sample
    fails (a budget the method cannot meet), the row has no accuracies and ``note`` says why.
    """
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager
    from .data.checkpoints import resolve_pretrained
    from .lmms.families import FAMILY_CLASSES
    from .models import family_of

    knobs = dict(knobs or {})
    path = resolve_pretrained(checkpoint)
    family = family_of(path)
    planted = isinstance(method, Method)
    model = FAMILY_CLASSES[family](pretrained=path, method="full" if planted else method, device=device, **knobs)
    if planted:
        model.method = method
    out = simple_evaluate(model=model, tasks=["freres_synthetic"], limit=limit, log_samples=True,
                          task_manager=TaskManager(include_path=str(ROOT / "task_configs")))
    metrics = out["results"]["freres_synthetic"]
    records = [s["token_counts"][0] for s in out["samples"]["freres_synthetic"]]
    errors = [r["error"] for r in records if r.get("error")]
    kept = [r["visual_tokens_after"] for r in records if r.get("visual_tokens_after") is not None]
    before = [r["visual_tokens_before"] for r in records if r.get("visual_tokens_before") is not None]
    kv = [r["kv_visual_tokens"] for r in records if r.get("kv_visual_tokens") is not None]  # methods acting in the KV cache
    row = {"checkpoint": Path(checkpoint).name, "method": method.name if planted else method,
           "budget": knobs.get("budget", 1.0),
           "visual_tokens": round(sum(kept) / len(kept), 1) if kept else None,
           "of": round(sum(before) / len(before), 1) if before else None, "samples": len(records),
           "errors": len(errors)}
    if kv:
        row["kv_visual_tokens"] = round(sum(kv) / len(kv), 1)
    if len(errors) == len(records):
        row["note"] = f"every sample failed: {errors[0]}"
        return row
    row.update({q: round(metrics[f"{q}_accuracy,none"], 1) for q in QTYPES})
    row["all"] = round(metrics["accuracy,none"], 1)
    row["note"] = f"{len(errors)} samples failed: {errors[0]}" if errors else ""
    return row
