"""Regression checks on a real benchmark's subset: every method on the first ``limit`` samples, against a baseline.

    python -m freres_lmms regression benchmark=videomme model=qwen2_vl_7b limit=50      # a GPU job
    make ci-regression benchmark=videomme model=tiny_qwen2vl limit=4                    # the same, tiny
    python -m freres_lmms regression benchmark=videomme model=qwen2_vl_7b limit=50 update=true

Hydra overrides of the primary config (``conf/freres.yaml``: ``benchmark``, ``model``) plus
``limit``, ``methods`` (default: ``full`` and every registered method), ``budgets`` (0.5, 0.25),
``update`` and ``baseline`` (default ``results/regression/<benchmark>-<model>.json``). Weights and
data are checked before any work (exit 2 naming what is missing). Each check is one lmms-eval run
through our wrapper (``tables.runner.evaluate_row``), its results and samples kept under
``outputs/regression/<benchmark>-<model>/``; it compares the benchmark's metrics
(``conf/benchmark``) within the baseline file's ``tolerance`` and the mean visual tokens exactly.
``update=true`` writes the baseline (with its tolerance) instead; its diff is the review.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .config import ConfigError, compose, override_value
from .regression import runs

ROOT = Path(__file__).resolve().parents[1]
OWN_KEYS = ("limit", "methods", "budgets", "update", "baseline", "tolerance")
DEFAULT_TOLERANCE = 5.0  # metric points; a baseline file states its own


def parse(argv: list[str]) -> tuple[list[str], dict]:
    """Split ``key=value`` arguments into the primary config's overrides and this command's own keys."""
    import yaml

    own, overrides = {}, []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"expected key=value, got {arg!r}")
        if key in OWN_KEYS:
            own[key] = yaml.safe_load(value) if value else None  # typed like Hydra's values: 4, [a, b], true
        else:
            overrides.append(arg)
    if override_value(overrides, "benchmark") is None:
        raise ConfigError("benchmark=<name> is required (a file of conf/benchmark)")
    return overrides, own


def check_key(method: str, knobs: dict) -> str:
    return "/".join([method] + [f"{k}={v}" for k, v in sorted(knobs.items())])


def measure(cfg, checks: list[tuple[str, dict]], folder: Path) -> dict:
    """One lmms-eval run per check on ``cfg``'s benchmark and model: its metrics and mean visual tokens.
    Each run's results and samples stay in ``folder/<check>/`` (what to read when a check fails)."""
    from .tables.runner import ModelCache, evaluate_row

    models, out = ModelCache(), {}
    for method, knobs in checks:
        name = check_key(method, knobs)
        row = evaluate_row(cfg, method, knobs, folder / name.replace("/", "_"), models)
        out[name] = {"metrics": row["metrics"], "visual_tokens": row["measured_tokens"],
                     "samples": row["samples"], "errors": row["errors"]}
    return out


def compare(measured: dict, baseline: dict) -> list[str]:
    """Differences beyond the baseline's tolerance, one readable line each (empty: all within)."""
    tolerance, problems = float(baseline["tolerance"]), []
    for name, row in measured.items():
        ref = baseline["checks"].get(name)
        if ref is None:
            problems.append(f"{name}: not in the baseline (update=true adds it)")
            continue
        for key in ("visual_tokens", "samples", "errors"):
            if row[key] != ref[key]:
                problems.append(f"{name}: {key.replace('_', ' ')} {row[key]} != baseline {ref[key]}")
        for metric, value in ref["metrics"].items():
            got = row["metrics"].get(metric)
            if (value is None) != (got is None) or (value is not None and abs(got - value) > tolerance):
                problems.append(f"{name}: {metric} {got} vs baseline {value} (tolerance {tolerance:g})")
    return problems


def main(argv: list[str]) -> int:
    from .tables.datacheck import missing

    try:
        overrides, own = parse(argv)
        limit = own.get("limit")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"limit must be a positive int, got {limit!r}")
        cfg = compose(overrides + ([f"run.limit={limit}"] if limit else []))
        checks = runs(list(own["methods"]) if own.get("methods") else None,
                      budgets=tuple(own.get("budgets") or (0.5, 0.25)))
        path = Path(own.get("baseline") or ROOT / "results" / "regression" / f"{cfg.benchmark.name}-{cfg.model.name}.json")
        update = bool(own.get("update"))
        if not update and not path.is_file():
            raise ConfigError(f"no baseline at {path}: run once with update=true on a trusted version")
        lacking = missing(cfg)
        if lacking:
            raise ConfigError(f"{cfg.benchmark.title} on {cfg.model.name} cannot run here; needs: " + "; ".join(lacking))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    folder = ROOT / "outputs" / "regression" / f"{cfg.benchmark.name}-{cfg.model.name}"
    measured = measure(cfg, checks, folder)
    print(f"runs' results and samples: {folder}")
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"benchmark": cfg.benchmark.name, "model": cfg.model.name, "pretrained": cfg.model.pretrained,
                  "limit": limit, "tolerance": float(own.get("tolerance") or DEFAULT_TOLERANCE), "checks": measured}
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"baseline written: {path} ({len(measured)} checks)")
        return 0
    baseline = json.loads(path.read_text())
    if baseline.get("limit") != limit:
        print(f"error: the baseline was measured on limit={baseline.get('limit')}, not {limit}", file=sys.stderr)
        return 2
    for name, row in measured.items():
        ref = baseline["checks"].get(name, {})
        print(f"{name:36s} {json.dumps(row['metrics'])} tokens {row['visual_tokens']} (baseline {json.dumps(ref.get('metrics'))})")
    problems = compare(measured, baseline)
    if problems:
        print("regression check failed:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"regression check passed: {len(measured)} checks within {baseline['tolerance']:g} points, token counts exact")
    return 0
