"""Train the testbed: a small Qwen2-VL or Qwen3-VL (DeepStack) model on the synthetic videos.

    python scripts/train_testbed.py testbed=qwen2vl           # one H100/H200, about 7 minutes
    python scripts/train_testbed.py testbed=qwen3vl out=...    # any key of conf/train_testbed.yaml
    python scripts/train_testbed.py testbed=long_qwen2vl      # the long-clip task (128 frames)

Batches come from the vectorized generator on the GPU (``freres_lmms.data.training``), with
inputs identical to what the checkpoint's processor builds from the task's mp4 files; each
video's own question (the evaluation prompt) is followed by ``extra_questions`` more chat turns
about it, so one pass of the vision tower supervises several answers. bf16
autocast, AdamW, warmup then cosine; the schedule ends at ``steps`` or ``max_minutes``. Writes
a ``save_pretrained`` checkpoint (weights in bf16) with ``train_log.jsonl``, ``train_config.yaml``
and ``freres_tiny.json`` (test accuracy per question type) to ``out``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from freres_lmms.data.checkpoints import TESTBED_SIZE, TinySize, new_checkpoint, save_checkpoint  # noqa: E402
from freres_lmms.data.synthetic import SPLIT_SEEDS  # noqa: E402
from freres_lmms.data.tasks import TASKS  # noqa: E402
from freres_lmms.data.training import SyntheticBatches, answer_accuracy, use_packed_vision_attention  # noqa: E402


@dataclass
class TrainConfig:
    family: str = "qwen2vl"
    task: str = "short"  # the generator (data/tasks.py): short (16 frames) or long (128 frames)
    init_from: str | None = None  # continue from a checkpoint this script wrote (a second segment)
    out: str = "outputs/testbed/testbed-qwen2vl"
    seed: int = 0
    device: str = "cuda"
    # the videos: what the task's files hold (16 frames of 224x224 at 8 fps)
    frames: int = 16
    size: int = 224
    fps: int = 8
    # long clips: over the first `curriculum_share` of the schedule the needles shrink from large and
    # lasting (the generator's ease=1) to the task's (ease=0); 0: none
    curriculum_share: float = 0.0
    # train on clips of `train_frames` (cheaper steps) with the question placed where it follows a
    # `frames` clip (Qwen's text positions follow the clip's last slice); validation and test on `frames`
    train_frames: int | None = None
    chroma: float = 0.5  # share of videos with simulated 4:2:0 chroma, as H.264 files carry
    extra_questions: int = 5  # more chat turns per video (other valid questions): answers per vision pass
    # the schedule: warmup, then cosine until `steps` or `max_minutes`, whichever comes first
    batch_size: int = 64
    steps: int = 100_000
    max_minutes: float = 8.6
    warmup_steps: int = 200
    # the optimizer (AdamW; no decay on norms, biases and embeddings)
    lr: float = 1e-3
    min_lr: float = 2e-5
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    packed_vision_attention: bool = True  # training-only speed-up, same logits
    # logging and evaluation (validation every eval_every steps, test at the end)
    log_every: int = 50
    eval_every: int = 1000
    eval_samples: int = 700
    test_samples: int = 1400
    eval_chunk: int = 64  # clips per evaluation forward (long clips: fewer)
    model: TinySize = field(default_factory=lambda: TESTBED_SIZE)  # override e.g. model.rope_theta=30


ConfigStore.instance().store(name="train_testbed_schema", node=TrainConfig)


def per_type(correct: torch.Tensor, qtype: torch.Tensor, qtypes=TASKS["short"].qtypes) -> dict[str, float]:
    """Accuracy (%) per question type and overall."""
    out = {name: round(100 * correct[qtype == i].float().mean().item(), 2) for i, name in enumerate(qtypes)}
    out["all"] = round(100 * correct.float().mean().item(), 2)
    return out


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


@hydra.main(version_base=None, config_path="../freres_lmms/conf", config_name="train_testbed")
def main(cfg: TrainConfig) -> None:
    device = torch.device(cfg.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    size = OmegaConf.to_object(cfg.model)
    model, processor = new_checkpoint(cfg.family, seed=cfg.seed, size=size)
    earlier = {"steps": 0, "train_minutes": 0.0, "log": []}
    if cfg.init_from:  # same architecture, trained weights; a fresh optimizer and schedule
        source = Path(cfg.init_from)
        model = type(model).from_pretrained(source, dtype=torch.float32)
        info = json.loads((source / "freres_tiny.json").read_text())
        earlier = {"steps": info["steps"], "train_minutes": info["train_minutes"],
                   "log": (source / "train_log.jsonl").read_text().splitlines()}
    model.to(device).train()
    if cfg.packed_vision_attention:
        use_packed_vision_attention(model)
    params = sum(p.numel() for p in model.parameters())
    batches = SyntheticBatches(processor, cfg.frames, cfg.size, cfg.fps, device, chroma=cfg.chroma, task=cfg.task)
    batches.precompute_positions(model)
    train_batches = batches
    if cfg.train_frames and cfg.train_frames != cfg.frames:
        train_batches = SyntheticBatches(processor, cfg.train_frames, cfg.size, cfg.fps, device, chroma=cfg.chroma, task=cfg.task)
        train_batches.precompute_positions(model, text_start=batches.text_start)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                                  lr=cfg.lr, betas=(0.9, 0.98), fused=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    valid = batches.draw(cfg.eval_samples, SPLIT_SEEDS["validation"])
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = open(out / "train_log.jsonl", "w")
    log_file.writelines(line + "\n" for line in earlier["log"])
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"

    def log(record: dict) -> None:
        print(json.dumps(record), flush=True)
        log_file.write(json.dumps(record) + "\n")

    def evaluate(split_batch) -> dict[str, float]:
        model.eval()
        with autocast:
            correct = answer_accuracy(model, batches, *split_batch, chunk=cfg.eval_chunk)
        model.train()
        return per_type(correct, split_batch[1].qtype, batches.task.qtypes)

    log({"event": "start", "family": cfg.family, "task": cfg.task, "frames": cfg.frames, "parameters": params, "device": device_name,
         "init_from": cfg.init_from, "steps_before": earlier["steps"]})
    started, step, running = time.perf_counter(), 0, 0.0
    budget = 60 * cfg.max_minutes
    while True:
        elapsed = time.perf_counter() - started
        progress = max(step / cfg.steps, elapsed / budget)
        if progress >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step, progress)
        if earlier["steps"] + step >= 1_000_000:
            raise RuntimeError("train seeds would reach the validation split's")
        seed = SPLIT_SEEDS["train"] + 1_000 * cfg.seed + earlier["steps"] + step  # a new draw in every segment
        ease = max(0.0, 1.0 - progress / cfg.curriculum_share) if cfg.curriculum_share > 0 else 0.0
        scene, questions = train_batches.draw(cfg.batch_size, seed, first=step, ease=ease)
        extra = train_batches.extra(scene, questions, cfg.extra_questions, seed=10**8 + seed)
        with autocast:
            loss = model(**train_batches.inputs(scene, questions, generator, extra=extra)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        running += loss.item() if step % cfg.log_every == 0 else 0.0
        if step % cfg.log_every == 0:
            elapsed = time.perf_counter() - started
            log({"step": step, "loss": round(loss.item(), 4), "lr": optimizer.param_groups[0]["lr"], "ease": round(ease, 3),
                 "seconds": round(elapsed, 1), "steps_per_second": round(step / elapsed, 2)})
        if step % cfg.eval_every == 0:
            log({"step": step, "validation": evaluate(valid)})
    train_seconds = time.perf_counter() - started
    validation = evaluate(valid)
    log({"step": step, "validation": validation})
    info = {"family": cfg.family, "task": batches.task.name, "frames": cfg.frames,
            "weights": f"trained on {batches.task.name} (scripts/train_testbed.py)",
            "parameters": params, "steps": earlier["steps"] + step,
            "train_minutes": round(earlier["train_minutes"] + train_seconds / 60, 2),
            "batch_size": cfg.batch_size, "device": device_name, "torch": torch.__version__,
            "validation_accuracy_first_token": validation}
    # saved before the test split is read, so a run stopped during the test keeps its weights
    model.set_attn_implementation("sdpa")  # what the saved checkpoint loads with
    trained = model.to(torch.bfloat16).eval()
    save_checkpoint(trained, processor, out, info)
    (out / "train_config.yaml").write_text(OmegaConf.to_yaml(cfg))
    # The test split drawn on the CPU, as the task's files are (a larger draw of the same seed), on the
    # bf16 weights just saved.
    test_started = time.perf_counter()
    test_split = batches.draw(cfg.test_samples, SPLIT_SEEDS["test"], on_cpu=True)
    with torch.no_grad():
        test = per_type(answer_accuracy(trained, batches, *test_split, chunk=cfg.eval_chunk), test_split[1].qtype,
                        batches.task.qtypes)
    log({"step": step, "test": test, "train_seconds": round(train_seconds, 1),
         "test_seconds": round(time.perf_counter() - test_started, 1),
         "total_steps": earlier["steps"] + step, "total_minutes": round(earlier["train_minutes"] + train_seconds / 60, 2)})
    log_file.close()
    save_checkpoint(trained, processor, out, {**info, "test_accuracy_first_token": test, "test_samples": cfg.test_samples})
    print(f"saved {out}")


if __name__ == "__main__":
    main()
