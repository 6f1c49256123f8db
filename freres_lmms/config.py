"""Hydra configs of the paper instantiations: schemas, composition, validation.

``freres_lmms/conf/freres.yaml`` composes one group of each: ``model/`` (a checkpoint and the
architecture numbers the FLOPs estimate needs), ``method/`` (a registered method and its knobs),
``budget/`` (a visual-token target and how to meet it), ``benchmark/`` (lmms-eval tasks, metric
keys, the offline data they need) and ``experiment/`` (one preset per row of a paper table: the
row's model, method, budget and operating point). ``compose(overrides)`` returns the validated
config; every group except ``method`` is checked by the structured schema registered below, and
``method`` by a schema built from the method's own dataclass (unknown knobs and wrong types fail
at composition, naming the preset).

``model=tiny`` is a substitution, not a checkpoint: each experiment runs on the small model of
its own family (the trained testbed where one exists, else the random tiny checkpoint), so every
table can run end to end on a CPU.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from .families import FAMILIES

CONF = Path(__file__).resolve().parent / "conf"
PRIMARY = "freres"
TINY = "tiny"
# model=tiny resolves per family; only these families have a trained testbed
TRAINED_TESTBEDS = ("qwen2vl", "qwen3vl")


@dataclass
class ModelConfig:
    name: str = MISSING
    family: str = MISSING  # qwen2vl | qwen2_5vl | qwen3vl (``tiny``: resolved per experiment)
    pretrained: str | None = None  # hub id, local dir, testbed-<family>; None: the tiny random checkpoint
    size: str = ""  # as tables print it (2B, 7B, ...)
    hidden_size: int = MISSING  # d in the FLOPs estimate
    intermediate_size: int = MISSING  # m
    num_layers: int = MISSING  # T
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    dtype: str = "auto"
    attn_implementation: str = "sdpa"


@dataclass
class BudgetConfig:
    name: str = MISSING
    # visual tokens the paper's row targets on its own input (None: no target, the method's knobs stand)
    target: int | None = None
    # the full-token count the target refers to; on another input the target scales by target/of
    of: int | None = None
    rule: str = "nearest"  # nearest: closest reachable count; at_most: the largest count <= target
    # also stay at or below what this method emits when matched to the same target (Fre-Res Table 1)
    not_above_method: str | None = None


@dataclass
class MetricConfig:
    task: str | None = None
    tasks: list[str] | None = None  # mean over these tasks' values
    key: str = MISSING  # "<metric>,<filter>" as in lmms-eval's results
    scale: float = 1.0  # to percent
    field: str | None = None  # a dict-valued metric's entry


@dataclass
class DataConfig:
    hf_dataset: str | None = None  # a dataset repo that must be in the hub cache
    path: str | None = None  # a folder or file that must exist
    under: str | None = None  # env var the path is relative to (HF_HOME)
    what: str = ""


@dataclass
class BenchmarkConfig:
    name: str = MISSING
    title: str = MISSING
    tasks: list[str] = MISSING
    metrics: dict[str, MetricConfig] = MISSING
    data: list[DataConfig] = field(default_factory=list)
    include_path: str | None = None  # our own task YAMLs (relative to the repo root)
    frames: int = 16
    height: int = 448
    width: int = 448
    needs_judge: bool = False
    # the benchmark's videos have exactly frames x height x width (the synthetic task): its shape,
    # not the experiment's operating point, sets the token grid
    fixed_input: bool = False
    # with fixed_input, its prompts replace the row's too: the most tokens a sample has around its
    # video (chat template, question, options; Qwen3-VL's timestamps), per family
    text_tokens: dict[str, int] = field(default_factory=dict)


@dataclass
class InputConfig:
    """The row's operating point; None falls back to the benchmark's."""

    frames: int | None = None
    height: int | None = None
    width: int | None = None
    frame_encoding: str = "paired"  # paired | per_frame (see the wrapper)
    fps: float | None = None
    text_tokens: int = 64  # prompt tokens around the video, for AdaReTaKe's plan and the FLOPs estimate


@dataclass
class RowConfig:
    table: str | None = None
    id: str | None = None
    label: str | None = None


@dataclass
class RunConfig:
    limit: int | None = None
    batch_size: int = 1
    max_new_tokens: int = 32
    device: str | None = None


@dataclass
class FreresConfig:
    model: ModelConfig = MISSING
    method: dict[str, Any] = MISSING
    budget: BudgetConfig = MISSING
    benchmark: BenchmarkConfig = MISSING
    input: InputConfig = field(default_factory=InputConfig)
    row: RowConfig = field(default_factory=RowConfig)
    run: RunConfig = field(default_factory=RunConfig)


ConfigStore.instance().store(name="freres_schema", node=FreresConfig)


class ConfigError(ValueError):
    """A preset or override that does not describe a valid experiment."""


def override_value(overrides: list[str], key: str) -> str | None:
    """The value of the first ``key=value`` among ``overrides`` (Hydra's ``+``/``~`` prefixes allowed)."""
    for item in overrides:
        if item.lstrip("+~").split("=", 1)[0] == key and "=" in item:
            return item.split("=", 1)[1]
    return None


def split_arguments(argv: list[str]) -> tuple[list[str], dict]:
    """Command-line words as (Hydra overrides, ``--option[=value]`` options)."""
    options, overrides = {}, []
    for arg in argv:
        if arg.startswith("--"):
            key, _, value = arg[2:].partition("=")
            options[key] = value or True
        else:
            overrides.append(arg)
    return overrides, options


def _compose_raw(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return hydra_compose(PRIMARY, overrides=list(overrides))


def tiny_model(family: str) -> str:
    """The model preset ``model=tiny`` stands for on ``family``."""
    return f"testbed_{family}" if family in TRAINED_TESTBEDS else f"tiny_{family}"


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The validated config of ``overrides`` (Hydra syntax: ``experiment=freres_t2/qwen2_vl_7b_dycoke``)."""
    overrides = list(overrides)
    try:
        if override_value(overrides, "model") == TINY:
            rest = [o for o in overrides if override_value([o], "model") is None]
            family = _compose_raw(rest).model.family
            overrides = rest + [f"model={tiny_model(family)}"]
        cfg = _compose_raw(overrides)
    except Exception as err:  # hydra's errors name the key; add which overrides were asked for
        raise ConfigError(f"cannot compose {' '.join(overrides) or '(defaults)'}: {err}") from None
    validate_method(cfg.method, where=f"method of {' '.join(overrides) or '(defaults)'}")
    if cfg.model.family not in FAMILIES:
        raise ConfigError(f"model {cfg.model.name!r}: family must be one of {', '.join(FAMILIES)}, got {cfg.model.family!r}")
    if cfg.budget.rule not in ("nearest", "at_most"):
        raise ConfigError(f"budget {cfg.budget.name!r}: rule must be nearest or at_most, got {cfg.budget.rule!r}")
    if cfg.input.frame_encoding not in ("paired", "per_frame"):
        raise ConfigError(f"input.frame_encoding must be paired or per_frame, got {cfg.input.frame_encoding!r}")
    return cfg


def compose_profile(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """``conf/profile.yaml`` with ``overrides`` (``scripts/profile_table3.py``), checked before any work."""
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base=None):
            cfg = hydra_compose("profile", overrides=list(overrides))
    except Exception as err:
        raise ConfigError(f"cannot compose profile {' '.join(overrides) or '(defaults)'}: {err}") from None
    if cfg.frame_encoding not in ("paired", "per_frame"):
        raise ConfigError(f"frame_encoding must be paired or per_frame, got {cfg.frame_encoding!r}")
    for key in ("video.frames", "video.height", "video.width", "stream.chunk_frames", "stream.vision_chunk_tokens",
                "runs", "warmup_frames", "decode_tokens"):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key} must be a positive int, got {value!r}")
    if cfg.stream.chunk_frames % 2:
        raise ConfigError(f"stream.chunk_frames must be even (temporal patch 2), got {cfg.stream.chunk_frames}")
    if not isinstance(cfg.prefill.chunk_tokens, int) or cfg.prefill.chunk_tokens < 0:
        raise ConfigError(f"prefill.chunk_tokens must be a non-negative int, got {cfg.prefill.chunk_tokens!r}")
    for key in ("backend", "decode_backend"):
        if cfg.prefill.get(key) not in (None, "cudnn", "flash", "efficient", "math"):
            raise ConfigError(f"prefill.{key} must be cudnn, flash, efficient, math or null, got {cfg.prefill.get(key)!r}")
    return cfg


# -- the method group: a schema per registered method ---------------------------------------------
def _schema_type(annotation: Any) -> Any:
    """OmegaConf type for a method field: primitives stay, unions (``int | float | None``) become Any."""
    if isinstance(annotation, str):
        annotation = {"int": int, "float": float, "str": str, "bool": bool}.get(annotation, Any)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return Optional[args[0]] if len(args) == 1 and args[0] in (int, float, str, bool) else Any  # noqa: UP045 (OmegaConf 2.3 reads typing.Optional, not X | None)
    return annotation if annotation in (int, float, str, bool) else Any


def method_schema(name: str) -> type:
    """A dataclass of the init knobs of method ``name`` (defaults included), for OmegaConf."""
    from .core import METHODS

    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    cls = METHODS[name]
    hints = typing.get_type_hints(cls)
    knobs = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        knobs.append((f.name, _schema_type(hints.get(f.name, Any)), field(default=default)))
    return dataclasses.make_dataclass(f"{cls.__name__}Knobs", [("name", str, field(default=name))] + knobs)


def validate_method(node: DictConfig | dict, where: str = "method") -> dict:
    """Check a method node against its schema; return ``{name, **knobs}`` as plain Python."""
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    if "name" not in data:
        raise ConfigError(f"{where}: no `name` (one of the registered methods)")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(method_schema(data["name"])), data)
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"{where}: {err}") from None
    return {k: v for k, v in OmegaConf.to_container(merged).items() if k == "name" or k in data}


def method_knobs(cfg: DictConfig) -> tuple[str, dict]:
    """(method name, knobs as composed)."""
    knobs = validate_method(cfg.method)
    return knobs.pop("name"), knobs


# -- input shape -----------------------------------------------------------------------------------
def input_grid(cfg: DictConfig) -> tuple[int, int, int]:
    """Merged-token grid ``(T, H, W)`` of the row's input, computed like Qwen's processors.

    Frame sides are rounded to the nearest multiple of patch x merge (Qwen's ``smart_resize``
    without its pixel clamps: the operating point already states the resized size); paired
    encoding folds ``temporal_patch_size`` frames into one latent slice, per_frame keeps each.
    """
    frames, height, width = input_size(cfg)
    factor = cfg.model.patch_size * cfg.model.spatial_merge_size
    h = max(1, round(height / factor))
    w = max(1, round(width / factor))
    t = frames if cfg.input.frame_encoding == "per_frame" else math.ceil(frames / cfg.model.temporal_patch_size)
    return t, h, w


def input_size(cfg: DictConfig) -> tuple[int, int, int]:
    """(frames, height, width) of the row on its benchmark: the operating point, else the benchmark's."""
    bench, point = cfg.benchmark, cfg.input
    if bench.fixed_input:
        return bench.frames, bench.height, bench.width
    return point.frames or bench.frames, point.height or bench.height, point.width or bench.width


def prompt_tokens(cfg: DictConfig) -> int:
    """Text tokens around the video: the operating point's, or a fixed-input benchmark's own longest
    prompt for the row's family (what a context-length knob such as AdaReTaKe's must leave room for)."""
    bench = cfg.benchmark
    if bench.fixed_input and cfg.model.family in bench.text_tokens:
        return int(bench.text_tokens[cfg.model.family])
    return int(cfg.input.text_tokens)


def experiment_presets(table: str | None = None) -> list[str]:
    """Names of the experiment presets (``<table>/<row>``), of one table folder or all."""
    root = CONF / "experiment"
    pattern = f"{table}/*.yaml" if table else "*/*.yaml"
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.glob(pattern))


def group_presets(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))
