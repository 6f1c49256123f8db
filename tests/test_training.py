"""The training inputs built on tensors equal what the processor builds; the training script runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from freres_lmms.data.checkpoints import TinySize, build_processor, new_checkpoint
from freres_lmms.data.synthetic import prompt_text, render
from freres_lmms.data.tasks import TASKS
from freres_lmms.data.tokenizer import train_tokenizer
from freres_lmms.data.training import SyntheticBatches, answer_accuracy, chroma_subsample, use_packed_vision_attention

FAMILIES = ("qwen2vl", "qwen3vl")
SMALL = TinySize(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vision_width=64, vision_depth=3,
                 vision_heads=2, deepstack=[0, 2], init_range=0.3)
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("family, task, frames", [("qwen2vl", "short", 8), ("qwen3vl", "short", 8), ("qwen3vl", "long", 48)])
def test_inputs_equal_the_processor(family, task, frames):
    """Batches built on tensors equal the processor on the same clips (long: 24 slices, a Qwen3-VL
    timestamp each)."""
    spec = TASKS[task]
    processor = build_processor(family, train_tokenizer())
    batches = SyntheticBatches(processor, frames=frames, size=224, fps=4.0, task=task)
    scene, questions = batches.draw(7 if task == "short" else 3, seed=3)
    ours = batches.inputs(scene, questions, with_answers=False)
    texts = [processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt_text(d["question"], d["options"])}]}],
        tokenize=False, add_generation_prompt=True) for d in questions.docs("x", qtypes=spec.qtypes, phrases=spec.phrases)]
    processor.tokenizer.padding_side = "right"
    metadata = {"fps": 4.0, "frames_indices": list(range(frames)), "total_num_frames": frames}
    reference = processor(text=texts, videos=[v.permute(0, 3, 1, 2) for v in spec.render(scene, frames, 224)],
                          video_metadata=[metadata] * len(texts), padding=True, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "video_grid_thw"):
        assert torch.equal(ours[key], reference[key].to(ours[key].dtype)), key
    torch.testing.assert_close(ours["pixel_values_videos"], reference["pixel_values_videos"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_cover_exactly_the_answer(family):
    model, processor = new_checkpoint(family, size=SMALL)
    batches = SyntheticBatches(processor, frames=4, size=224)
    scene, questions = batches.draw(5, seed=4)
    labels = batches.inputs(scene, questions)["labels"]
    decoded = [processor.tokenizer.decode(row[row != -100]) for row in labels]
    assert decoded == [f"{d['answer']}<|im_end|>" for d in questions.docs("x")]
    with pytest.raises(ValueError, match="extra turns need the answers"):
        batches.inputs(scene, questions, with_answers=False, extra=batches.extra(scene, questions, 1, seed=0))


@pytest.mark.parametrize("family", FAMILIES)
def test_extra_turns_equal_the_chat_template(family):
    """Extra questions follow as chat turns: ids equal the processor on the rendered conversation,
    and the labels are exactly each turn's answer letter and end of turn."""
    model, processor = new_checkpoint(family, size=SMALL)
    batches = SyntheticBatches(processor, frames=4, size=224, fps=2.0)
    scene, questions = batches.draw(7, seed=6)
    extra = batches.extra(scene, questions, turns=2, seed=7)
    ours = batches.inputs(scene, questions, extra=extra)
    turns = [questions.docs("x")] + [e.docs("x") for e in extra]
    metadata = {"fps": 2.0, "frames_indices": list(range(4)), "total_num_frames": 4}
    for row in range(7):
        messages = []
        for turn, docs in enumerate(turns):
            text = {"type": "text", "text": prompt_text(docs[row]["question"], docs[row]["options"])}
            messages.append({"role": "user", "content": [{"type": "video"}, text] if turn == 0 else [text]})
            messages.append({"role": "assistant", "content": docs[row]["answer"]})
        chat = processor.apply_chat_template(messages, tokenize=False)
        video = render(scene.map(lambda v: v[row:row + 1]), 4, 224)[0].permute(0, 3, 1, 2)
        reference = processor(text=[chat], videos=[video], video_metadata=[metadata], return_tensors="pt")["input_ids"][0]
        length = int(ours["attention_mask"][row].sum())
        # the rendered chat ends with "\n" after the last end of turn; our sequence stops at the end token
        assert ours["input_ids"][row, :length].tolist() == reference[:length].tolist()
        labels = ours["labels"][row][ours["labels"][row] != -100]
        expected = "".join(f"{docs[row]['answer']}<|im_end|>" for docs in turns)
        assert processor.tokenizer.decode(labels) == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_training_shortcuts_change_no_logit(family):
    """Packed vision attention, precomputed positions and one packed grid give the stock forward's logits."""
    model, processor = new_checkpoint(family, size=SMALL)
    batches = SyntheticBatches(processor, frames=4, size=224)
    scene, questions = batches.draw(5, seed=1)
    stock_inputs = batches.inputs(scene, questions)
    with torch.no_grad():
        stock = model(**stock_inputs)
    batches.precompute_positions(model)
    use_packed_vision_attention(model)
    fast_inputs = batches.inputs(scene, questions)
    assert fast_inputs["video_grid_thw"].shape[0] == 1 and "position_ids" in fast_inputs
    with torch.no_grad():
        fast = model(**fast_inputs)
    mask = stock_inputs["attention_mask"].bool()
    torch.testing.assert_close(fast.logits[mask], stock.logits[mask], atol=1e-5, rtol=1e-5)
    assert fast.loss.item() == pytest.approx(stock.loss.item(), abs=1e-5)
    assert answer_accuracy(model, batches, scene, questions).shape == (5,)


@pytest.mark.parametrize("family", FAMILIES)
def test_short_training_clips_place_the_text_as_after_the_long_clip(family):
    """Training on 48-frame clips for the 128-frame task: the question's positions equal a 128-frame
    clip's, the video block's stay the 48-frame clip's own (the processor's). Qwen3-VL's text after
    the video moves with the clip (a timestamp per slice); Qwen2-VL's follows the grid's h, w only."""
    model, processor = new_checkpoint(family, size=SMALL)
    long, short = (SyntheticBatches(processor, frames=f, size=224, task="long") for f in (128, 48))
    long.precompute_positions(model)
    natural = SyntheticBatches(processor, frames=48, size=224, task="long")
    natural.precompute_positions(model)
    short.precompute_positions(model, text_start=long.text_start)
    assert short.text_start == long.text_start
    assert (long.text_start > natural.text_start) == (family == "qwen3vl")
    scene, questions = short.draw(2, seed=3)
    placed, own = (b.inputs(scene, questions, with_answers=False)["position_ids"] for b in (short, natural))
    video = len(short.prefix)
    assert torch.equal(placed[:, :, :video], own[:, :, :video])
    assert torch.equal(placed[1:, :, video:], own[1:, :, video:] + long.text_start - natural.text_start)
    with pytest.raises(ValueError, match="inside the video block"):
        long.precompute_positions(model, text_start=natural.text_start - 1)


def test_chroma_subsample_keeps_flat_colours():
    flat = torch.full((1, 2, 4, 4, 3), 120, dtype=torch.uint8)
    flat[..., 0] = 200
    assert (chroma_subsample(flat).int() - flat.int()).abs().max() <= 1
    edge = torch.zeros(1, 1, 4, 4, 3, dtype=torch.uint8)
    edge[..., 0, 0] = 255  # one red pixel: its colour spreads over its 2x2 block
    assert chroma_subsample(edge)[0, 0, 1, 1].sum() > 0


def test_train_script_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "tb"
    cmd = [sys.executable, str(ROOT / "scripts" / "train_testbed.py"), "device=cpu", "frames=4", "size=112",
           "batch_size=2", "steps=2", "log_every=1", "eval_every=100", "eval_samples=7", "test_samples=7",
           f"out={out}", "model.hidden=64", "model.intermediate=128", "model.vision_width=64", "model.vision_heads=2",
           "model.layers=2", "model.vision_depth=2", "model.mrope_section=[4,2,2]",
           f"hydra.run.dir={tmp_path / 'hydra'}"]
    subprocess.run(cmd, check=True, cwd=tmp_path, capture_output=True)
    info = json.loads((out / "freres_tiny.json").read_text())
    assert info["steps"] == 2 and set(info["test_accuracy_first_token"]) >= {"count", "destination", "all"}
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]
    from transformers import AutoConfig, AutoProcessor, Qwen2VLForConditionalGeneration

    config = AutoConfig.from_pretrained(out)
    assert config.text_config.rope_parameters["mrope_section"] == [4, 2, 2]
    assert config.vision_config._attn_implementation != "flash_packed_sdpa"
    model = Qwen2VLForConditionalGeneration.from_pretrained(out, dtype=torch.float32)
    assert model.dtype == torch.float32 and AutoProcessor.from_pretrained(out) is not None


def test_testbed_names_resolve_or_fail_clearly(tmp_path, monkeypatch):
    from freres_lmms.data import checkpoints

    monkeypatch.setattr(checkpoints, "TESTBED_ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match="no trained testbed checkpoint for qwen2vl"):
        checkpoints.resolve_pretrained("testbed-qwen2vl")
    with pytest.raises(FileNotFoundError, match="trained: qwen2vl, qwen3vl"):
        checkpoints.resolve_pretrained("testbed-qwen2_5vl")
    (tmp_path / "testbed-qwen3vl").mkdir()
    (tmp_path / "testbed-qwen3vl" / "model.safetensors").write_bytes(b"")
    assert checkpoints.resolve_pretrained("testbed-qwen3vl") == str(tmp_path / "testbed-qwen3vl")
    assert checkpoints.resolve_pretrained("Qwen/Qwen2-VL-7B-Instruct") == "Qwen/Qwen2-VL-7B-Instruct"


def test_testbed_table_rows(checkpoints):
    """One row per method and budget; a budget a method cannot meet is reported, not scored 0."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import testbed_table

    from freres_lmms.data.synthetic import QTYPES, ensure_synthetic

    ensure_synthetic()
    from freres_lmms.core import METHODS

    others = sorted(set(METHODS) - {"full"})
    assert "uniform" in others and "freres" in others
    assert testbed_table.rows_to_run([0.5, 0.1]) == [("full", {})] + [(m, {"budget": b}) for m in others for b in (0.5, 0.1)]
    full = testbed_table.evaluate(str(checkpoints["qwen2vl"]), "full", {}, limit=7)
    assert full["visual_tokens"] == full["of"] == 512 and full["samples"] == 7 and full["errors"] == 0
    assert set(QTYPES) <= set(full) and all(0 <= full[q] <= 100 for q in QTYPES)
    half = testbed_table.evaluate(str(checkpoints["qwen2vl"]), "uniform", {"budget": 0.5}, limit=7)
    assert half["visual_tokens"] == 256
    tiny = testbed_table.evaluate(str(checkpoints["qwen2vl"]), "uniform", {"budget": 0.1}, limit=7)
    assert tiny["errors"] == 7 and "below one temporal slice" in tiny["note"] and "count" not in tiny


@pytest.mark.parametrize("testbed, theta, section", [("qwen2vl", 30.0, [4, 14, 14]), ("qwen3vl", 1e6, None)])
def test_testbed_presets_compose(testbed, theta, section):
    from hydra import compose, initialize_config_dir

    sys.path.insert(0, str(ROOT / "scripts"))
    import train_testbed  # noqa: F401  (registers the schema)

    with initialize_config_dir(config_dir=str(ROOT / "freres_lmms" / "conf"), version_base=None):
        cfg = compose("train_testbed", overrides=[f"testbed={testbed}"])
    assert cfg.family == testbed and cfg.out == f"outputs/testbed/testbed-{testbed}"
    assert cfg.model.rope_theta == theta and cfg.model.mrope_section == section
    assert cfg.model.hidden == 256 and cfg.model.deepstack == [1, 2]


@pytest.mark.parametrize("family", FAMILIES)
def test_long_testbed_presets_compose(family):
    """The long recipe: from the short testbed, 48-frame steps for the 128-frame task, eased needles,
    each other question type once per clip (as many as every clip answers)."""
    from hydra import compose, initialize_config_dir

    from freres_lmms.data.synthetic_long import EXTRA_TURNS

    sys.path.insert(0, str(ROOT / "scripts"))
    import train_testbed  # noqa: F401  (registers the schema)

    with initialize_config_dir(config_dir=str(ROOT / "freres_lmms" / "conf"), version_base=None):
        cfg = compose("train_testbed", overrides=[f"testbed=long_{family}"])
    assert (cfg.task, cfg.frames, cfg.train_frames, cfg.extra_questions) == ("long", 128, 48, EXTRA_TURNS)
    assert (ROOT / cfg.init_from / "config.json").is_file() and cfg.init_from.endswith(f"testbed-{family}")
    assert 0 < cfg.curriculum_share < 1 and cfg.out == f"outputs/testbed/testbed-long-{family}"
