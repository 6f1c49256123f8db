"""Table specs (``freres_lmms/conf/table/<id>.yaml``) and the papers' reference numbers (``reference/<id>.csv``).

A spec names its reference CSV (one row per paper row, the paper's column names), the benchmarks
its columns come from and, per paper column, our metric as ``<benchmark>.<metric>`` (a metric of
``conf/benchmark/<benchmark>.yaml``) or ``mean`` (the mean of the row's other measured columns).
A reference row is runnable when an experiment preset ``<presets>/<row>.yaml`` exists; the others
(other model families, methods not implemented here) keep the paper's numbers and say what they
would need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from ..config import CONF, experiment_presets

REFERENCE = Path(__file__).resolve().parent / "reference"
TABLE_CONF = CONF / "table"
KINDS = ("accuracy", "profile", "flops")


@dataclass
class Backbone:
    """An architecture for equation S3: an experiment preset's (its model and full-token input), or
    the numbers of a checkpoint we have no model preset for."""

    experiment: str | None = None
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_layers: int | None = None
    tokens_per_frame: int | None = None  # visual tokens one frame gives at full retention
    frames: int | None = None


@dataclass
class RetentionRows:
    """The FLOPs table's second part: S3 for every row of the supplement's tables, from the
    retention each row states (a calculation: the methods need not be implemented here)."""

    tables: list[str] = field(default_factory=list)
    backbones: dict[str, Backbone] = field(default_factory=dict)  # the reference CSVs' backbone names
    retention_columns: list[str] = field(default_factory=list)  # where a row states its retention
    frames_column: str | None = None  # a row's frame count (S4)
    layer_column: str | None = None  # a row's pruning layer (S5)
    retention: dict[str, str] = field(default_factory=dict)  # table -> retention of rows that state none
    pruning_layer: dict[str, int] = field(default_factory=dict)  # method -> where its second share starts
    text_tokens: int = 64
    paper: dict[str, float] = field(default_factory=dict)  # "<table>/<row>" -> FLOPs % the paper reports


@dataclass
class TableSpec:
    id: str = ""
    title: str = ""
    paper: str = ""
    aliases: list[str] = field(default_factory=list)
    reference: str | None = None  # CSV under tables/reference (None for computed tables)
    kind: str = "accuracy"  # accuracy | profile | flops
    presets: str | None = None  # experiment folder of the rows (default: id)
    benchmarks: list[str] = field(default_factory=list)
    columns: dict[str, str | None] = field(default_factory=dict)  # paper column -> "<benchmark>.<metric>" | "mean" | None (paper only)
    tokens_column: str | None = None  # the paper's visual-token column
    plot: bool = False  # also draw accuracy vs visual tokens (Figure 3)
    note: str = ""
    retention_rows: RetentionRows | None = None  # the flops table's supplement rows

    @property
    def preset_folder(self) -> str:
        return self.presets or self.id

    def reference_rows(self) -> pd.DataFrame:
        if not self.reference:
            return pd.DataFrame()
        frame = pd.read_csv(REFERENCE / self.reference, dtype={"row": str})
        if frame["row"].duplicated().any():
            raise ValueError(f"{self.reference}: duplicate row ids {sorted(frame['row'][frame['row'].duplicated()])}")
        return frame

    def preset(self, row: str) -> str | None:
        name = f"{self.preset_folder}/{row}"
        return name if (CONF / "experiment" / f"{name}.yaml").is_file() else None


def all_tables() -> dict[str, TableSpec]:
    specs = {}
    for path in sorted(TABLE_CONF.glob("*.yaml")):
        merged = OmegaConf.merge(OmegaConf.structured(TableSpec), OmegaConf.load(path))
        spec = OmegaConf.to_object(merged)
        if spec.id != path.stem:
            raise ValueError(f"{path}: id {spec.id!r} differs from the file name")
        if spec.kind not in KINDS:
            raise ValueError(f"{path}: kind must be one of {', '.join(KINDS)}, got {spec.kind!r}")
        specs[spec.id] = spec
    return specs


def table_spec(name: str) -> TableSpec:
    """The spec of a table id or alias (``2`` is Fre-Res Table 2, ``ada3`` AdaReTaKe Table 3, ...)."""
    tables = all_tables()
    for spec in tables.values():
        if name == spec.id or name in spec.aliases:
            return spec
    known = ", ".join(f"{s.id} ({'/'.join(s.aliases)})" if s.aliases else s.id for s in tables.values())
    raise KeyError(f"no table {name!r}; known: {known}")


def table_presets(name: str) -> list[str]:
    """The experiment presets of a table's runnable rows, in the paper's order."""
    spec = table_spec(name)
    rows = spec.reference_rows()
    if rows.empty:
        return experiment_presets(spec.preset_folder)
    return [p for p in (spec.preset(r) for r in rows["row"]) if p]
