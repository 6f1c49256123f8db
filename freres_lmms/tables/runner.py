"""Run every row of a paper table through lmms-eval (in Python) and collect what the table needs.

For each reference row: a row with an experiment preset is composed (plus the caller's
overrides: ``model=tiny``, ``benchmark=synthetic``, ``run.limit=N`` ...), budget-matched without a
model (``tokens.resolve``), checked for weights and data up front (``datacheck``), then evaluated
on each of the table's benchmarks by ``lmms_eval.evaluator.simple_evaluate`` with our wrapper, so
a failure raises here instead of the CLI's exit 0. Each row/benchmark gets its own folder with the
resolved config, lmms-eval's results and samples, and ``metrics.json``; a folder whose metrics were
computed with the same resolved config is reused, so an interrupted table resumes where it stopped.
A row that fails is reported in the table with its error; the other rows go on.
"""

from __future__ import annotations

import json
import math
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..config import ConfigError, compose, input_size, override_value, prompt_tokens
from ..core import METHODS
from ..synthetic_eval import summarize_records
from ..tokens import resolve
from .datacheck import ROOT, missing
from .spec import TableSpec

QWEN_BACKBONES = ("Qwen2-VL-", "Qwen2.5-VL-", "Qwen3-VL-")


@dataclass
class RowResult:
    row: str
    label: str
    status: str = "ok"  # ok | not run (needs ...) | failed: ...
    metrics: dict = field(default_factory=dict)  # our metric name -> value (percent)
    visual_tokens: float | None = None  # what the resolved preset emits (probe clip, no model)
    measured_tokens: float | None = None  # mean over the evaluated samples
    context_tokens: int | None = None
    samples: int = 0
    errors: int = 0
    folder: str | None = None


def why_not_runnable(reference: dict) -> str:
    backbone, method = str(reference.get("backbone", "")), str(reference.get("method", ""))
    if not backbone.startswith(QWEN_BACKBONES):
        return f"not run (needs {backbone}: not a Qwen-VL family)"
    if method not in METHODS and method != "model":
        return f"not run (needs {method}: not implemented here)"
    return f"not run (needs a model preset for {backbone})"


class ModelCache:
    """The loaded wrapper of the last checkpoint (one model in memory at a time): consecutive rows
    on the same checkpoint swap only the method and the per-run settings."""

    def __init__(self):
        self.key = None
        self.model = None

    def get(self, cfg: DictConfig, method: str, knobs: dict):
        from ..core import build_method
        from ..lmms.families import FAMILY_CLASSES

        key = (cfg.model.family, cfg.model.pretrained, cfg.run.device, cfg.model.dtype, cfg.model.attn_implementation)
        if key != self.key:
            self.model = None  # free the previous one before loading
            self.model = FAMILY_CLASSES[cfg.model.family](
                pretrained=cfg.model.pretrained, device=cfg.run.device, dtype=cfg.model.dtype,
                attn_implementation=cfg.model.attn_implementation)
            self.key = key
        model = self.model
        model.method = build_method(method, **knobs)
        model.batch_size_per_gpu = int(cfg.run.batch_size)
        model.max_num_frames = int(input_size(cfg)[0])
        model.fps = cfg.input.fps
        model.frame_encoding = cfg.input.frame_encoding
        model.max_new_tokens = int(cfg.run.max_new_tokens)
        return model


def metric_value(results: dict, spec: DictConfig) -> float | None:
    tasks = list(spec.tasks) if spec.tasks else [spec.task]
    values = []
    for task in tasks:
        value = results.get(task, {}).get(spec.key)
        if spec.field is not None and isinstance(value, dict):
            value = value.get(spec.field)
        if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
            return None
        values.append(float(value) * spec.scale)
    return round(sum(values) / len(values), 2) if values else None


def evaluate_row(cfg: DictConfig, method: str, knobs: dict, folder: Path, models: ModelCache) -> dict:
    """lmms-eval on one benchmark; writes results.json, samples.jsonl and metrics.json in ``folder``."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    include = str(ROOT / cfg.benchmark.include_path) if cfg.benchmark.include_path else None
    model = models.get(cfg, method, knobs)
    out = simple_evaluate(model=model, tasks=list(cfg.benchmark.tasks), limit=cfg.run.limit, log_samples=True,
                          task_manager=TaskManager(include_path=include, include_defaults=include is None))  # ours: index only ours
    if out is None:
        raise RuntimeError("lmms-eval returned no results")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({"results": out["results"], "configs": out.get("configs")},
                                                    indent=1, default=str))
    records = []
    with open(folder / "samples.jsonl", "w") as handle:
        for task, samples in out.get("samples", {}).items():
            for sample in samples:
                handle.write(json.dumps({"task": task, **sample}, default=str) + "\n")
                counts = sample.get("token_counts") or [{}]
                records.append(counts[0] if isinstance(counts, list) and counts else {})
    summary = summarize_records(records)
    metrics = {name: metric_value(out["results"], spec) for name, spec in cfg.benchmark.metrics.items()}
    # KV methods (AdaReTaKe) are matched on their stored visual KV, the others on the tokens they emit
    measured = summary["kv_visual_tokens"] if summary["kv_visual_tokens"] is not None else summary["visual_tokens"]
    return {"metrics": metrics, "samples": summary["samples"], "errors": summary["errors"],
            "first_error": summary["first_error"], "measured_tokens": measured}


def run_row(spec: TableSpec, reference: dict, overrides: list[str], out_root: Path, models: ModelCache,
            force: bool = False) -> RowResult:
    result = RowResult(row=reference["row"], label=str(reference.get("label", reference["row"])))
    preset = spec.preset(reference["row"])
    if preset is None:
        result.status = why_not_runnable(reference)
        return result
    benchmark_override = override_value(overrides, "benchmark")
    benchmarks = [benchmark_override] if benchmark_override else list(spec.benchmarks) or [None]
    needs: list[str] = []
    try:
        for benchmark in benchmarks:
            cfg = compose([f"experiment={preset}", *overrides] + ([f"benchmark={benchmark}"] if benchmark and not benchmark_override else []))
            if spec.kind == "accuracy":  # weights and data first: budget matching a row that cannot run is wasted
                if cfg.benchmark.name == "synthetic":  # our own task: build its videos if missing, like make demo
                    from ..data.synthetic import ensure_synthetic

                    ensure_synthetic()
                lacking = missing(cfg)
                if lacking:
                    needs.extend(n for n in lacking if n not in needs)
                    continue
            resolved = resolve(cfg)
            if result.visual_tokens is None:
                result.visual_tokens = resolved.counts["visual_tokens"]
                result.context_tokens = resolved.counts["input_tokens"] + prompt_tokens(cfg)
            if spec.kind != "accuracy":
                result.status = "tokens only (peak VRAM and TTFT come from GPU profiling)"
                continue
            folder = out_root / reference["row"] / cfg.benchmark.name
            result.folder = f"outputs/tables/{out_root.name}/{reference['row']}"
            config = OmegaConf.to_container(resolved.resolved_config(), resolve=True)
            done = folder / "metrics.json"
            if not force and done.is_file() and json.loads(done.read_text()).get("config") == config:
                measured = json.loads(done.read_text())
            else:
                folder.mkdir(parents=True, exist_ok=True)
                OmegaConf.save(OmegaConf.create(config), folder / "config.yaml")
                measured = evaluate_row(cfg, resolved.method, resolved.knobs, folder, models)
                measured["config"] = config
                done.write_text(json.dumps(measured, indent=1))
            result.metrics.update({f"{cfg.benchmark.name}.{k}": v for k, v in measured["metrics"].items()})
            result.samples += measured["samples"]
            result.errors += measured["errors"]
            result.measured_tokens = result.measured_tokens or measured["measured_tokens"]
            if measured["errors"] == measured["samples"] and measured["samples"]:
                result.status = f"failed: every sample failed ({measured['first_error']})"
    except ConfigError as err:
        result.status = f"failed: {err}"
        return result
    except Exception as err:  # one row never stops the table: the error goes into its row
        traceback.print_exc()
        result.status = f"failed: {type(err).__name__}: {err}"
        return result
    if needs and not result.metrics:
        result.status = f"not run (needs {'; '.join(needs)})"
    elif needs:
        result.status = f"partly run (needs {'; '.join(needs)})"
    return result
