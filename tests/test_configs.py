"""Hydra presets, schemas, token counts without a model, budget matching and the FLOPs estimate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from freres_lmms.config import (
    ConfigError,
    compose,
    experiment_presets,
    group_presets,
    input_grid,
)
from freres_lmms.tables.flops import (
    chunked_prefill,
    flops_s3,
    layer_profile,
    parse_retention,
    retention_profile,
    supplement_rows,
)
from freres_lmms.tables.spec import REFERENCE, all_tables, table_spec
from freres_lmms.tokens import match_knob, probe_video, resolve, scaled_target

ROOT = Path(__file__).resolve().parents[1]


def test_every_group_preset_composes_and_validates():
    for group in ("model", "method", "budget", "benchmark"):
        for name in group_presets(group):
            if group == "model" and name == "tiny":
                continue  # a substitution, composed with an experiment below
            cfg = compose([f"{group}={name}"])
            # a method preset names its registered method (freres_dense is `freres` with knobs)
            assert cfg[group].name == name or (group == "method" and name.startswith(cfg.method.name))


def test_every_experiment_preset_composes_on_its_own_and_on_tiny_synthetic():
    presets = experiment_presets()
    assert len(presets) >= 50
    for preset in presets:
        cfg = compose([f"experiment={preset}"])
        table, row = preset.split("/")
        assert (cfg.row.table, cfg.row.id) == (table, row)
        tiny = compose([f"experiment={preset}", "model=tiny", "benchmark=synthetic"])
        assert tiny.model.family == cfg.model.family  # model=tiny keeps the row's family
        assert tiny.model.name in ("testbed_qwen2vl", "testbed_qwen3vl", "tiny_qwen2_5vl")
        assert input_grid(tiny)[1:] in ((8, 8), (7, 7))  # the synthetic videos' 224x224, not the paper's input


def test_schema_errors_name_the_problem():
    with pytest.raises(ConfigError, match="bogus"):
        compose(["method=fourier", "+method.bogus=1"])
    with pytest.raises(ConfigError, match="rho"):
        compose(["method=fourier", "method.rho=abc"])
    with pytest.raises(ConfigError, match="unknown method"):
        compose(["method=fourier", "method.name=nope"])
    with pytest.raises(ConfigError, match="hidden_size"):
        compose(["model.hidden_size=abc"])
    with pytest.raises(ConfigError, match="rule"):
        compose(["budget=tokens_6600", "budget.rule=roughly"])
    with pytest.raises(ConfigError, match="experiment"):
        compose(["experiment=freres_t2/no_such_row"])


def test_paper_operating_points_give_the_papers_full_counts():
    grids = {"freres_t2/qwen2_vl_7b_vanilla": 14_000, "freres_t2/qwen3_vl_8b_vanilla": 16_000,
             "freres_t3/vanilla_dense_30fps": 1_036_800, "freres_t1/qwen2_vl_2b_vanilla": 3_200}
    for preset, tokens in grids.items():
        t, h, w = input_grid(compose([f"experiment={preset}"]))
        assert t * h * w == tokens


def tokens_line(*args) -> dict:
    out = subprocess.run([sys.executable, "-m", "freres_lmms", "tokens", *args], capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_tokens_command_prints_table3_counts_exactly():
    assert tokens_line("experiment=freres_t3/freres")["visual_tokens"] == 46_080  # + 22 text = the paper's 46,102
    uniform = tokens_line("experiment=freres_t3/uniform_1fps")
    assert uniform["visual_tokens"] == 60 * 576 and uniform["visual_tokens_full"] == 1_036_800  # 34,582 - 22


def test_budget_matching_hits_table2_targets():
    for preset in ("freres_t2/qwen2_vl_7b_dycoke", "freres_t2/qwen2_vl_7b_cdpruner", "freres_t2/qwen2_vl_7b_fourier",
                   "freres_t2/qwen3_vl_8b_dycoke", "freres_t2/qwen3_vl_8b_cdpruner", "freres_t2/qwen3_vl_8b_fourier"):
        resolved = resolve(compose([f"experiment={preset}"]))
        target = 6600 if "qwen2" in preset else 7600
        assert resolved.target == target
        assert abs(resolved.counts["visual_tokens"] - target) <= 0.02 * target, preset
        assert resolved.matched in ("k", "tokens_per_frame", "rho")
        # only the primary knob moved: every other knob is the method preset's
        base = compose([f"experiment={preset}"]).method
        assert {k: v for k, v in resolved.knobs.items() if k != resolved.matched} == {k: v for k, v in base.items() if k not in ("name", resolved.matched)}


def test_freres_compact_never_exceeds_the_matched_fourier_row():
    fourier = resolve(compose(["experiment=freres_t1/qwen2_vl_2b_fourier"]))
    freres = resolve(compose(["experiment=freres_t1/qwen2_vl_2b_freres_compact"]))
    assert freres.counts["visual_tokens"] <= min(fourier.counts["visual_tokens"], freres.target)
    assert freres.target <= 1331  # 1328 of 3193, on our 3200-token input


def test_match_knob_rules_on_a_hand_checked_grid():
    video = probe_video(4, 6, 6)  # Fourier keeps floor(6 rho)^2 per slice: 4, 9, 16, 25, 36
    knobs, counts = match_knob("fourier", {"rho": 0.5}, video, 50, "at_most")
    assert counts["visual_tokens"] == 36  # 4 x 9 <= 50 < 4 x 16
    knobs, counts = match_knob("fourier", {"rho": 0.5}, video, 60, "nearest")
    assert counts["visual_tokens"] == 64  # |64 - 60| < |36 - 60|
    assert int(6 * knobs["rho"]) == 4
    _, counts = match_knob("cdpruner", {}, video, 50, "at_most")
    assert counts["visual_tokens"] == 48  # 12 a frame
    with pytest.raises(Exception, match="above the target"):
        match_knob("fourier", {}, video, 3, "at_most")  # one token a slice is already 4


def test_targets_scale_with_the_input():
    cfg = compose(["experiment=freres_t2/qwen2_vl_7b_fourier", "model=tiny", "benchmark=synthetic"])
    assert scaled_target(cfg.budget, 512) == round(6600 * 512 / 14000)
    assert scaled_target(cfg.budget, 14000) == 6600
    assert scaled_target(compose(["budget=full"]).budget, 512) is None


def test_flops_s3_by_hand():
    d, m, r = 4, 8, 2
    n, kv = 3, 3
    per_layer = (4 * n * d * d + 2 * n * n * d + 2 * n * d * m) + r * ((4 * d * d + 2 * d * m) + 2 * (d * kv + d / 2 * (r + 1)))
    assert flops_s3([n, n], [kv, kv], d, m, r) == 2 * per_layer
    # DyCoke: the visual KV shrinks from its pruning layer on; the prefill does not
    prefill, decode = layer_profile("dycoke", {"layer": 2, "prune_ratio": 0.75}, {"visual_tokens": 100}, 10, 4)
    assert prefill == [110] * 4 and decode == [110, 110, 35, 35]
    # AdaReTaKe: chunk 2 attends to the text, chunk 1's kept KV and itself
    assert chunked_prefill([5, 5], [2, 2], 1, d, m, 1) == (4 * 5 * d * d + 2 * 5 * d * m) * 2 + 2 * 5 * (1 + 5) * d + 2 * 5 * (3 + 5) * d


def test_retention_strings_and_their_layer_profiles():
    assert parse_retention("2%") == (0.02, None)
    assert parse_retention("15%/7.5%") == (0.15, 0.075)
    assert parse_retention("100%/10%") == (1.0, 0.1)
    for bad in ("2", "0%", "120%", "1%/2%/3%", "x%", ""):
        with pytest.raises(ValueError, match="retention"):
            parse_retention(bad)
    assert retention_profile(6272, 4, 0.02, None, None) == [125] * 4
    assert retention_profile(6272, 4, 1.0, 0.1, 2) == [6272, 6272, 627, 627]  # FastV 100%/10% at K = 2
    with pytest.raises(ValueError, match="pruning layer"):
        retention_profile(6272, 4, 0.02, 0.01, None)


def test_flops_of_every_supplement_row():
    spec = table_spec("flops")
    tables = all_tables()
    references = {t: tables[t].reference_rows() for t in spec.retention_rows.tables}
    rows = {f"{r['table']}/{r['row']}": r for r in supplement_rows(spec.retention_rows, references)}
    assert len(rows) == sum(len(frame) for frame in references.values())  # every row, implemented or not
    ours = rows["supp_s2/ratio2_ours"]  # 2%/1% on LLaVA-OV-7B: 125 tokens in layers 0-17, 63 in 18-27
    assert (ours["full visual tokens"], ours["visual tokens (first layer)"], ours["visual tokens (last layer)"]) == (6272, 125, 63)
    d, m = 3584, 18944
    by_hand = flops_s3([125] * 18 + [63] * 10, [125] * 18 + [63] * 10, d, m) / flops_s3([6272] * 28, [6272] * 28, d, m)
    assert ours["% of full, visual tokens only"] == round(100 * by_hand, 2) == 2.58  # the paper reports about 2.6
    assert ours["% of full (paper)"] == 2.6
    assert rows["supp_s2/ratio10_fastv"]["pruning layer"] == 2 and rows["supp_s2/ratio10_fastv"]["visual tokens (first layer)"] == 6272
    assert rows["supp_s5/k7"]["pruning layer"] == 7  # the row's own K, not the default 18
    assert rows["supp_s4/ours_128f"]["full visual tokens"] == 128 * 196  # the row's own frames
    assert rows["supp_s1/vanilla"]["full visual tokens"] == 4096 and rows["supp_s1/vanilla"]["% of full"] == 100
    assert rows["supp_s6/tau0_7"]["pruning layer"] is None  # w/o the inner stage: 2% in every layer


def test_synthetic_prompt_lengths_are_the_longest_prompts(checkpoints, tmp_path):
    """benchmark=synthetic replaces a row's text tokens by its own longest prompt per family, so a
    context-length knob (AdaReTaKe's) matched on the probe always leaves room for the video."""
    import importlib.util

    from transformers import AutoProcessor

    from freres_lmms.config import prompt_tokens
    from freres_lmms.data.checkpoints import testbed_checkpoint
    from freres_lmms.data.synthetic import generate
    from freres_lmms.data.video import load_video
    from freres_lmms.lmms.wrapper import prompt_text

    spec = importlib.util.spec_from_file_location("synthetic_task", ROOT / "task_configs" / "freres_synthetic" / "utils.py")
    task = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(task)
    bench = compose(["benchmark=synthetic"]).benchmark
    jsonl = generate(tmp_path, count=7, frames=bench.frames, fps=8, size=bench.height)  # one sample per question type
    docs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    paths = {"qwen2vl": testbed_checkpoint("qwen2vl"), "qwen2_5vl": checkpoints["qwen2_5vl"], "qwen3vl": testbed_checkpoint("qwen3vl")}
    for family, path in paths.items():
        processor = AutoProcessor.from_pretrained(path)
        video_id = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
        lengths = []
        for doc in docs:
            clip = load_video(str(tmp_path / doc["video"]), bench.frames)
            text = prompt_text(processor, task.doc_to_text(doc), videos=1)  # what the wrapper sends
            ids = processor(text=[text], videos=[clip.frames], video_metadata=[clip.metadata()], return_tensors="pt")["input_ids"][0]
            lengths.append(int((ids != video_id).sum()))
        assert bench.text_tokens[family] == max(lengths), family
    row = compose(["experiment=adaretake_t3/r4_temporal_allocation", "model=tiny", "benchmark=synthetic"])
    assert prompt_tokens(row) == 91 and prompt_tokens(compose(["experiment=adaretake_t3/r4_temporal_allocation"])) == 64
    resolved = resolve(row)  # 936 of 73,728 scaled to 512 tokens: 6 visual KV entries after the longest prompt
    assert resolved.knobs["max_input_length"] == 91 + 6 and resolved.counts["visual_tokens"] == 6


def test_table_specs_match_their_reference_csvs_and_benchmarks():
    tables = all_tables()
    assert {f"freres_t{i}" for i in range(1, 7)} | {"freres_fig3", "flops"} | {f"adaretake_t{i}" for i in range(1, 5)} \
        | {f"supp_s{i}" for i in range(1, 9)} <= set(tables)
    assert table_spec("2").id == "freres_t2" and table_spec("ada3").id == "adaretake_t3"
    for spec in tables.values():
        if not spec.reference:
            continue
        frame = spec.reference_rows()
        assert {"row", "label", "backbone", "method"} <= set(frame.columns)
        missing = [c for c in spec.columns if c not in frame.columns]
        assert not missing, f"{spec.id}: columns {missing} not in {spec.reference}"
        for source in spec.columns.values():
            if source and source != "mean":
                benchmark, metric = source.split(".")
                assert benchmark in spec.benchmarks
                assert metric in compose([f"benchmark={benchmark}"]).benchmark.metrics, f"{spec.id}: {source}"
        # every preset of the table is one of its rows (no preset silently ignored)
        rows = set(frame["row"])
        for preset in experiment_presets(spec.preset_folder):
            assert preset.split("/")[1] in rows, f"{preset} is no row of {spec.reference}"
    assert pd.read_csv(REFERENCE / "freres_t2.csv").set_index("row").loc["qwen2_vl_7b_freres", "NExT-QA Acc."] == 70.08
