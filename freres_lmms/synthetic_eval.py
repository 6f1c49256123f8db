"""One lmms-eval run of the synthetic task: a checkpoint, a method, a row of accuracies per question type.

Shared by ``scripts/testbed_table.py`` (the table of every method and budget) and
``freres_lmms.regression`` (the CI checks against a stored baseline). The run goes through
lmms-eval in Python, so a failure is an error here, not the CLI's silent exit 0.
"""

from __future__ import annotations

from pathlib import Path

from .core import Method
from .data.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]


def evaluate(checkpoint: str, method: str | Method, knobs: dict | None = None, limit: int | None = None,
             device: str | None = None, task: str = "short", include_path: str | Path | None = None) -> dict:
    """Accuracy (%) per question type, per group and overall, mean visual tokens before/after, failed samples.

    ``method`` is a registered name (with ``knobs``) or a ``Method`` instance; ``task`` a key of
    ``data.tasks.TASKS`` (the wrapper reads the task's clip length unless ``max_num_frames`` is a
    knob). When every sample fails (a budget the method cannot meet), the row has no accuracies and
    ``note`` says why.
    """
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from .data.checkpoints import resolve_pretrained
    from .lmms.families import FAMILY_CLASSES
    from .models import family_of

    spec = TASKS[task]
    knobs = dict(knobs or {})
    frames = knobs.pop("max_num_frames", spec.frames)
    path = resolve_pretrained(checkpoint)
    family = family_of(path)
    planted = isinstance(method, Method)
    model = FAMILY_CLASSES[family](pretrained=path, method="full" if planted else method, device=device,
                                   max_num_frames=frames, **knobs)
    if planted:
        model.method = method
    out = simple_evaluate(model=model, tasks=[spec.name], limit=limit, log_samples=True,
                          task_manager=TaskManager(include_path=str(include_path or ROOT / "task_configs"),
                                                   include_defaults=False))
    metrics = out["results"][spec.name]
    summary = summarize_records([s["token_counts"][0] for s in out["samples"][spec.name]])
    row = {"checkpoint": Path(checkpoint).name, "method": method.name if planted else method,
           "budget": knobs.get("budget", 1.0), "visual_tokens": summary["visual_tokens"], "of": summary["of"],
           "samples": summary["samples"], "errors": summary["errors"]}
    if summary["kv_visual_tokens"] is not None:
        row["kv_visual_tokens"] = summary["kv_visual_tokens"]
    if summary["errors"] == summary["samples"]:
        row["note"] = f"every sample failed: {summary['first_error']}"
        return row
    row.update({q: round(metrics[f"{q}_accuracy,none"], 1) for q in spec.qtypes})
    if task != "short":  # the long task's columns include its groups (the short table keeps its layout)
        row.update({g: round(metrics[f"{g}_accuracy,none"], 1) for g in spec.groups})
    row["all"] = round(metrics["accuracy,none"], 1)
    row["note"] = f"{summary['errors']} samples failed: {summary['first_error']}" if summary["errors"] else ""
    return row


def summarize_records(records: list[dict]) -> dict:
    """Per-run means of the wrapper's per-sample records (``token_counts``): visual tokens after and
    before compression, visual KV entries (methods acting in the KV cache), and the failures."""
    def mean(key: str) -> float | None:
        values = [r[key] for r in records if r.get(key) is not None]
        return round(sum(values) / len(values), 1) if values else None

    errors = [r["error"] for r in records if r.get("error")]
    return {"samples": len(records), "errors": len(errors), "first_error": errors[0] if errors else None,
            "visual_tokens": mean("visual_tokens_after"), "of": mean("visual_tokens_before"),
            "kv_visual_tokens": mean("kv_visual_tokens")}
