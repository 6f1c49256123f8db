"""``scripts/reproduce_table.py table=<id> [overrides] [--force] [--root=DIR]``: regenerate one paper table.

Table 3 (a GPU profile) without ``model=``/``benchmark=`` overrides is rendered from ``make profile``'s
``results/table3.json`` (``--profile=PATH`` another), our numbers beside the paper's.

Overrides are Hydra overrides applied to every row (``model=tiny benchmark=synthetic run.limit=14
run.device=cpu``). Rows run through lmms-eval in Python, one folder per row under
``outputs/tables/<run>/`` (resumed when its resolved config is unchanged); the table is written
to ``results/tables/<run>.md`` and ``.csv`` (plus ``.png`` for Figure 3), ``<run>`` being the table
id and the overrides that change what is measured. The exit status is 1 when a runnable row
failed; rows that lack weights or data are "not run (needs ...)" and do not fail the table.
``--force`` recomputes rows whose folders exist; ``--root`` writes results/ and outputs/ under DIR.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import pandas as pd

from ..config import TINY, TRAINED_TESTBEDS, override_value, split_arguments
from .datacheck import ROOT
from .flops import preset_rows, supplement_rows
from .render import build_frame, to_markdown
from .runner import ModelCache, RowResult, run_row
from .spec import TableSpec, all_tables, table_spec

NAMED_OVERRIDES = ("model", "benchmark", "input.frame_encoding", "run.limit")


def run_name(spec: TableSpec, overrides: list[str]) -> str:
    parts = [spec.id]
    for key in NAMED_OVERRIDES:
        value = override_value(overrides, key)
        if value:
            parts.append(f"{key.split('.')[-1]}{value}" if key == "run.limit" else value)
    return "-".join(parts)


def device_name(overrides: list[str]) -> str:
    import torch

    device = override_value(overrides, "run.device")
    if (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda"):
        return torch.cuda.get_device_name()
    return "CPU"


def supplement_section(spec: TableSpec, csv: Path) -> str:
    """The FLOPs table's second part: every row of the supplement's tables (CSV and Markdown)."""
    rows = spec.retention_rows
    tables = all_tables()
    frame = pd.DataFrame(supplement_rows(rows, {t: tables[t].reference_rows() for t in rows.tables}))
    frame.to_csv(csv, index=False)
    shown = frame.astype(object).where(frame.notna(), "")
    return ("\n## Every row of the supplement's Tables S1-S8\n\nFrom the retention each row states (`x%` in "
            "every layer; `x%/y%`: `y%` from the method's pruning layer on, in the KV cache too), "
            f"{rows.text_tokens} text tokens, against the full model on the same frames; the last columns count "
            "visual tokens alone, and the paper's own FLOPs share stands beside ours where it reports one. "
            "Settings a table leaves unstated are read as `conf/table/flops.yaml` documents.\n\n"
            + shown.to_markdown(index=False) + "\n")


def plot(spec: TableSpec, frame: pd.DataFrame, path: Path, substituted: str | None) -> None:
    """Figure 3: accuracy against the share of the full-token row's visual tokens, per backbone;
    the paper's points on the left, ours on the right (another benchmark when substituted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(spec.columns))
    panels = (("paper", "visual tokens (paper)", f"{first} (paper)", f"{first} (paper)"),
              ("ours", "visual tokens (ours)", f"{substituted} accuracy (ours)" if substituted else f"{first} (ours)",
               f"{substituted} accuracy (ours)" if substituted else f"{first} (ours)"))
    figure, axes = plt.subplots(1, 2, figsize=(9, 4))
    for axis, (who, tokens, accuracy, ylabel) in zip(axes, panels):
        for backbone, group in frame.groupby("backbone", sort=False):
            if accuracy not in group:
                continue
            points = group.dropna(subset=[tokens, accuracy])
            full = points.loc[points["method"] == "full", tokens]
            if points.empty or full.empty:
                continue
            share = points[tokens].astype(float) / float(full.iloc[0])
            axis.scatter(share, points[accuracy].astype(float), label=backbone)
            for x, y, method in zip(share, points[accuracy].astype(float), points["method"]):
                axis.annotate(str(method), (x, y), fontsize=7)
        axis.set_xlabel("visual tokens / full-token row")
        axis.set_ylabel(ylabel)
        axis.set_title(who, fontsize=9)
        axis.legend(fontsize=7)
    figure.suptitle(spec.title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str]) -> int:
    overrides, options = split_arguments(argv)
    table = override_value(overrides, "table")
    if table is None:
        print(__doc__)
        return 2
    force = bool(options.get("force"))
    base = Path(options.get("root", ROOT))  # tests write elsewhere
    overrides = [o for o in overrides if not o.startswith("table=")]
    spec = table_spec(table)
    name = run_name(spec, overrides)
    results_dir = base / "results" / "tables"
    results_dir.mkdir(parents=True, exist_ok=True)
    substituted = override_value(overrides, "benchmark")
    header = [f"# {spec.title}", "",
              (f"Run `{name}`: `python scripts/reproduce_table.py {' '.join([f'table={spec.id}', *overrides])}` "
               f"on {device_name(overrides)}, {datetime.date.today().isoformat()}.")]
    supplement = ""
    if spec.kind == "profile" and not (set(o.split("=")[0] for o in overrides) & {"model", "benchmark"}):
        return render_profile(spec, Path(options.get("profile", base / "results" / "table3.json")), results_dir)
    if spec.kind == "flops":
        frame = pd.DataFrame(preset_rows(overrides))
        header.append("Equation S3 of the unified spatiotemporal supplement for every experiment preset, "
                      "with the counts of `python -m freres_lmms tokens` (no model). " + spec.note)
        if spec.retention_rows:
            supplement = supplement_section(spec, results_dir / f"{name}-supplement.csv")
        failed = False
    else:
        models = ModelCache()
        # rows live under their presets' table, so Figure 3 reuses Table 2's finished rows
        out_root = base / "outputs" / "tables" / name.replace(spec.id, spec.preset_folder, 1)
        results: list[RowResult] = []
        for reference in spec.reference_rows().to_dict("records"):
            result = run_row(spec, reference, overrides, out_root, models, force)
            print(f"[{spec.id}] {result.row}: {result.status}", flush=True)
            results.append(result)
        frame = build_frame(spec, results, substituted)
        if override_value(overrides, "model") == TINY:
            header.append(f"With `model=tiny` each row runs on its family's small model: the trained testbeds for "
                          f"{', '.join(TRAINED_TESTBEDS)}; the others on a random tiny checkpoint, whose accuracy "
                          "means nothing (it checks the path, not the method).")
        if substituted:
            header.append(f"Rows ran on the `{substituted}` benchmark instead of the paper's, so the paper's columns "
                          "are shown for reference only and our columns are that benchmark's accuracies (percent).")
        else:
            header.append("Each cell: the paper's number / ours (ours minus the paper's). Paper numbers are "
                          "the paper's own, transcribed in `freres_lmms/tables/reference/`.")
        header.append("Visual tokens (ours) are what the resolved preset emits on the row's input "
                      "(`python -m freres_lmms tokens`). " + spec.note)
        failed = any(r.status.startswith("failed") for r in results)
        (results_dir / f"{name}.json").write_text(json.dumps([r.__dict__ for r in results], indent=1, default=str))
        if spec.plot:
            plot(spec, frame, results_dir / f"{name}.png", substituted)
    frame.to_csv(results_dir / f"{name}.csv", index=False)
    markdown = to_markdown(spec, frame, substituted, header) if spec.kind != "flops" else \
        "\n".join(header) + "\n\n## Experiment presets\n\n" + frame.to_markdown(index=False) + "\n" + supplement
    (results_dir / f"{name}.md").write_text(markdown)
    print(markdown)
    print(f"written: {results_dir / name}.md, .csv")
    return 1 if failed else 0


def render_profile(spec: TableSpec, source: Path, results_dir: Path) -> int:
    """Table 3 as measured by ``make profile`` (its JSON), with the paper's numbers beside ours."""
    from .profile_render import render

    if not source.is_file():
        print(f"{spec.id}: no profile at {source}; run `make profile` on a GPU first (docs/gpu.md), or "
              f"`table=3 model=tiny benchmark=synthetic` for the token counts alone")
        return 2
    out = results_dir / f"{spec.id}-profile"
    render(json.loads(source.read_text()), out)
    print(out.with_suffix(".md").read_text())
    print(f"written: {out}.md, .csv (from {source})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
