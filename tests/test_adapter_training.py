"""Training Fre-Res's adapters (freres_lmms/adapter_training.py, scripts/train_adapters.py) on CPU with a
tiny checkpoint: the loss falls, only the adapter moves, save/load is exact, a fresh adapter is the
training-free method, two gloo processes equal one, and bad data or configuration is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from freres_lmms.adapter_training import AdapterRecipe, AdapterTrainer, read_jsonl, train
from freres_lmms.core import build_method
from freres_lmms.core.freres_fusion import FreResFusion
from freres_lmms.data.synthetic import generate
from freres_lmms.models import ADAPTERS

ROOT = Path(__file__).resolve().parents[1]
# 16 frames of 112x112: 8 slices of 4x4 tokens; 2 anchors and a temporal branch (so the absorber and
# every token adapter act)
KNOBS = {"budget": 0.5, "anchors": 2, "groups": 2, "pool": 2, "statics": 0, "temporal_share": 0.5}


@pytest.fixture(scope="module")
def train_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapter_data")
    return generate(root, count=8, frames=16, fps=4, size=112, split="train")


def trainer_for(loaded, family, samples, steps=1, batch_size=4, micro_batch=4, lr=1e-2, distill=0.0):
    model, processor = loaded[family]
    adapter = ADAPTERS[family](model, processor)
    recipe = AdapterRecipe(pretrained=family, method=dict(KNOBS), max_num_frames=16, distill=distill, temperature=2.0,
                           lr=lr, steps=steps, batch_size=batch_size, seed=0)
    return AdapterTrainer(adapter, recipe, samples, micro_batch=micro_batch)


def test_training_lowers_the_loss_and_moves_only_the_adapter(loaded, train_split, tmp_path):
    samples = read_jsonl(train_split)
    trainer = trainer_for(loaded, "qwen2vl", samples, steps=120, distill=0.5)
    backbone = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    fresh = {k: v.clone() for k, v in trainer.fusion.state_dict().items()}
    log = train(trainer, tmp_path / "adapter", warmup=5, log_every=1000)
    first, last = (sum(r["lm"] for r in part) / len(part) for part in (log[:10], log[-10:]))
    assert last < 0.7 * first, (first, last)
    assert all(torch.equal(v, backbone[k]) for k, v in trainer.model.state_dict().items())  # bit-identical
    moved = [k for k, v in trainer.fusion.state_dict().items() if not torch.equal(v, fresh[k])]
    assert {"gates", "type_embeddings", "raw_adapter.weight", "query.weight"} <= set(moved), moved
    assert (tmp_path / "adapter" / "teacher_logits.pt").is_file()
    recipe = json.loads((tmp_path / "adapter" / "training.json").read_text())
    assert recipe["method"] == KNOBS and recipe["steps_done"] == 120 and recipe["pretrained"] == "qwen2vl"

    # the saved adapter loads exactly, and evaluation (model_args adapter=PATH) gives the trained output
    reloaded = FreResFusion.from_pretrained(tmp_path / "adapter")
    assert all(torch.equal(v, trainer.fusion.state_dict()[k]) for k, v in reloaded.state_dict().items())
    inputs, _ = trainer._inputs([0, 1])
    trained, _ = trainer.adapter.compress_inputs(inputs, trainer.method)
    loaded_method = build_method("freres", adapter=str(tmp_path / "adapter"), **KNOBS)
    again, _ = trainer.adapter.compress_inputs(inputs, loaded_method)
    assert torch.equal(trained["mm_encoder_outputs"]["video"].pooler_output[0],
                       again["mm_encoder_outputs"]["video"].pooler_output[0])
    plain, _ = trainer.adapter.compress_inputs(inputs, build_method("freres", **KNOBS))
    assert not torch.equal(plain["mm_encoder_outputs"]["video"].pooler_output[0],
                           again["mm_encoder_outputs"]["video"].pooler_output[0])


@pytest.mark.parametrize("family", ["qwen2vl", "qwen3vl"])
def test_fresh_adapter_is_the_training_free_method(loaded, train_split, family):
    trainer = trainer_for(loaded, family, read_jsonl(train_split))
    inputs, _ = trainer._inputs([2, 3])
    with_fusion, _ = trainer.adapter.compress_inputs(inputs, trainer.method, grad=True)
    without, _ = trainer.adapter.compress_inputs(inputs, build_method("freres", **KNOBS))
    ours, theirs = (k["mm_encoder_outputs"]["video"] for k in (with_fusion, without))
    assert torch.equal(ours.pooler_output[0], theirs.pooler_output[0]) and ours.pooler_output[0].requires_grad
    assert torch.equal(with_fusion["position_ids"], without["position_ids"])
    if family == "qwen3vl":  # DeepStack rows take the absorber's weights too
        assert all(torch.equal(x, y) for a, b in zip(ours.deepstack_features, theirs.deepstack_features) for x, y in zip(a, b))


def test_two_gloo_processes_equal_one(train_split, checkpoints, tmp_path):
    common = [f"pretrained={checkpoints['qwen2vl']}", f"data={train_split}", "device=cpu", "steps=3", "batch_size=4",
              "micro_batch=1", "lr=0.01", "warmup=1", "distill=0.5", "max_num_frames=16",
              *[f"{'' if k == 'budget' else '+'}method.{k}={v}" for k, v in KNOBS.items()]]
    one = subprocess.run([sys.executable, "scripts/train_adapters.py", *common, f"out={tmp_path / 'one'}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                          "scripts/train_adapters.py", *common, f"out={tmp_path / 'two'}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("one", "two"))
    assert not torch.equal(a["gates"], torch.ones(2))  # it trained
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)  # summation order only
    logs = [[json.loads(line) for line in (tmp_path / name / "train_log.jsonl").read_text().splitlines()] for name in ("one", "two")]
    assert [r["lm"] for r in logs[0]] == pytest.approx([r["lm"] for r in logs[1]], rel=1e-5)


def test_unreadable_video_is_named_and_skipped(loaded, train_split, tmp_path):
    """One bad sample does not stop a run: it is named once, skipped, and recorded with the adapter."""
    broken = tmp_path / "train.jsonl"
    lines = train_split.read_text().splitlines()
    docs = [json.loads(line) for line in lines[:3]]
    for doc in docs:
        doc["video"] = str(train_split.parent / doc["video"])
    (tmp_path / "corrupt.mp4").write_bytes(b"not a video")
    docs.append({**docs[0], "id": "corrupt-one", "video": str(tmp_path / "corrupt.mp4")})
    broken.write_text("".join(json.dumps(d) + "\n" for d in docs))
    trainer = trainer_for(loaded, "qwen2vl", read_jsonl(broken), steps=2, distill=0.5)
    said = []
    trainer.warn = said.append
    log = train(trainer, tmp_path / "adapter", log_every=1000)
    assert [r["samples"] for r in log] == [3, 3] and len(said) == 1 and "corrupt-one" in said[0]
    assert torch.isnan(trainer.teacher_logits[3]).all() and not torch.isnan(trainer.teacher_logits[:3]).any()
    recorded = json.loads((tmp_path / "adapter" / "training.json").read_text())["skipped"]
    assert len(recorded) == 1 and "corrupt-one" in recorded[0]


def test_bad_data_is_named(tmp_path):
    bad = tmp_path / "train.jsonl"
    bad.write_text(json.dumps({"video": "a.mp4", "question": "q", "options": ["x", "y"], "answer": "A"}) + "\n"
                   + json.dumps({"video": "b.mp4", "question": "q", "options": ["x", "y"], "answer": "z"}) + "\n")
    with pytest.raises(ValueError, match=r"train.jsonl:2: answer 'z' is neither"):
        read_jsonl(bad)
    bad.write_text(json.dumps({"video": "a.mp4", "question": "q"}) + "\n")
    with pytest.raises(ValueError, match=r":1: missing options, answer"):
        read_jsonl(bad)


@pytest.mark.parametrize("args, message", [
    (["data=/nonexistent/train.jsonl"], "no file /nonexistent/train.jsonl"),
    (["+method.bogus=1"], "bogus"),
    (["method.budget=0"], "budget"),
    (["steps=0"], "steps must be a positive int"),
])
def test_bad_configuration_exits_2_before_any_work(args, message, train_split):
    done = subprocess.run([sys.executable, "scripts/train_adapters.py", f"data={train_split}", "device=cpu", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
