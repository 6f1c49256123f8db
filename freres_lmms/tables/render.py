"""Render a table run as Markdown and CSV: the paper's number, ours and the difference per column.

On the paper's own benchmarks each paper column is matched with our metric (``spec.columns``) and
shown as ``paper / ours (ours - paper)``. When the run substitutes a benchmark (``benchmark=
synthetic``) the paper's columns are shown as they are, labeled "paper", and our columns are that
benchmark's metrics: no difference is computed between numbers of different benchmarks.
"""

from __future__ import annotations

import math

import pandas as pd

from .runner import RowResult
from .spec import TableSpec

SUBSTITUTE_COLUMNS = ("accuracy", "spatial", "temporal", "mixed")


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _fmt(value) -> str:
    number = _number(value)
    if number is None:
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    return f"{number:,.0f}" if number.is_integer() and abs(number) >= 100 else f"{number:.2f}"


def ours_for(spec: TableSpec, column: str, result: RowResult) -> float | None:
    source = spec.columns.get(column)
    if source is None:
        return None
    if source == "mean":
        sources = [s for s in spec.columns.values() if s and s != "mean"]
        values = [result.metrics.get(s) for s in sources]
        return round(sum(values) / len(values), 2) if values and None not in values else None  # only over all
    return result.metrics.get(source)


def build_frame(spec: TableSpec, results: list[RowResult], substituted: str | None) -> pd.DataFrame:
    """One row per paper row: label, backbone, method, tokens, then per column paper/ours/diff, status."""
    reference = spec.reference_rows().set_index("row", drop=False)
    rows = []
    for result in results:
        ref = reference.loc[result.row].to_dict() if result.row in reference.index else {}
        row = {"row": result.row, "label": result.label, "backbone": ref.get("backbone"), "method": ref.get("method")}
        if spec.tokens_column:
            row["visual tokens (paper)"] = _number(ref.get(spec.tokens_column))
        # Table 3 counts the whole context (visual + text tokens)
        row["visual tokens (ours)"] = result.context_tokens if spec.kind == "profile" else result.visual_tokens
        row["visual tokens (measured)"] = result.measured_tokens  # mean over the evaluated samples
        for column in spec.columns:
            paper = ref.get(column)
            row[f"{column} (paper)"] = _number(paper) if _number(paper) is not None else (paper if isinstance(paper, str) else None)
            if substituted:
                continue
            ours = ours_for(spec, column, result)
            row[f"{column} (ours)"] = ours
            row[f"{column} (diff)"] = round(ours - _number(paper), 2) if ours is not None and _number(paper) is not None else None
        if substituted:
            for name in SUBSTITUTE_COLUMNS:
                row[f"{substituted} {name} (ours)"] = result.metrics.get(f"{substituted}.{name}")
        row["samples"] = result.samples
        row["errors"] = result.errors
        row["status"] = result.status
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(spec: TableSpec, frame: pd.DataFrame, substituted: str | None, header: list[str]) -> str:
    """Compact Markdown: one cell per paper column, ``paper / ours (diff)``."""
    columns = ["label", "backbone", "method"]
    cells = []
    for _, r in frame.iterrows():
        cell = {c: _fmt(r.get(c)) for c in columns}
        if "visual tokens (paper)" in frame:
            cell["visual tokens: paper / ours"] = f"{_fmt(r['visual tokens (paper)']) or '-'} / {_fmt(r['visual tokens (ours)']) or '-'}"
        else:
            cell["visual tokens (ours)"] = _fmt(r["visual tokens (ours)"]) or "-"
        cell["measured"] = _fmt(r["visual tokens (measured)"]) or "-"
        for column in spec.columns:
            paper = _fmt(r.get(f"{column} (paper)")) or "-"
            if substituted:
                cell[f"{column} (paper)"] = paper
                continue
            ours = r.get(f"{column} (ours)")
            if _number(ours) is None:
                cell[column] = f"{paper} / -"
            else:
                diff = _number(r.get(f"{column} (diff)"))
                cell[column] = f"{paper} / {_fmt(ours)}" + (f" ({diff:+.2f})" if diff is not None else "")
        if substituted:
            for name in SUBSTITUTE_COLUMNS:
                cell[f"{substituted} {name}"] = _fmt(r.get(f"{substituted} {name} (ours)")) or "-"
        cell["status"] = r["status"] + (f" ({r['errors']} of {r['samples']} samples failed)" if r["errors"] and r["status"] == "ok" else "")
        cells.append(cell)
    names = list(cells[0]) if cells else columns
    lines = [*header, "", "| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(c[n].replace("|", "/") for n in names) + " |" for c in cells]
    return "\n".join(lines) + "\n"
