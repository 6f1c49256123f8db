"""Train Fre-Res's adapters (fusion module) with the backbone frozen; see freres_lmms/adapter_training.py.

    python scripts/train_adapters.py pretrained=testbed-qwen3vl data=DIR/train.jsonl method.budget=0.1
    torchrun --nproc_per_node 4 scripts/train_adapters.py ...     # the global batch split over 4 GPUs
    make train-adapters ARGS="pretrained=... data=..."

Writes ``out``: the adapter (``config.json``, ``model.safetensors``: load it with
``--model_args ...,method=freres,adapter=<out>``), ``training.json`` (the preset and budget it was
trained for, the recipe), ``train_log.jsonl`` and the cached teacher logits. A bad configuration
(missing data, an unknown knob, a bad budget) exits 2 before any model is loaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def check(cfg: DictConfig) -> tuple[dict, list]:
    """Refuse a bad configuration before any work: (method knobs, samples)."""
    from freres_lmms.adapter_training import read_jsonl
    from freres_lmms.core import build_method

    knobs = OmegaConf.to_container(cfg.method)
    build_method("freres", **knobs)
    samples = read_jsonl(cfg.data)
    for key in ("steps", "batch_size", "micro_batch", "max_num_frames"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"{key} must be a positive int, got {cfg[key]!r}")
    if cfg.distill < 0 or cfg.temperature <= 0:
        raise ValueError("distill must be >= 0 and temperature > 0")
    return knobs, samples


@hydra.main(version_base=None, config_path="../freres_lmms/conf", config_name="train_adapters")
def main(cfg: DictConfig) -> None:
    try:
        knobs, samples = check(cfg)
    except (ValueError, KeyError, FileNotFoundError, TypeError) as err:
        print(f"train_adapters: {err}", file=sys.stderr)
        sys.exit(2)
    import torch
    from accelerate import PartialState
    from transformers import AutoProcessor

    from freres_lmms.adapter_training import AdapterRecipe, AdapterTrainer, train
    from freres_lmms.data.checkpoints import resolve_pretrained
    from freres_lmms.models import ADAPTERS, family_of

    state = PartialState(cpu=cfg.device == "cpu")  # several CPU processes: gloo
    device = torch.device(cfg.device if cfg.device == "cpu" else f"cuda:{state.local_process_index}")
    torch.manual_seed(cfg.seed)
    path = resolve_pretrained(cfg.pretrained)
    adapter_class = ADAPTERS[family_of(path)]
    dtype = torch.float32 if device.type == "cpu" else getattr(torch, cfg.dtype)
    model = adapter_class.model_class.from_pretrained(path, dtype=dtype, attn_implementation="sdpa").to(device)
    adapter = adapter_class(model, AutoProcessor.from_pretrained(path))
    recipe = AdapterRecipe(pretrained=str(cfg.pretrained), method=knobs, max_num_frames=cfg.max_num_frames,
                           distill=float(cfg.distill), temperature=float(cfg.temperature), lr=float(cfg.lr),
                           steps=cfg.steps, batch_size=cfg.batch_size, seed=cfg.seed)
    trainer = AdapterTrainer(adapter, recipe, samples, init_adapter=cfg.init_adapter, micro_batch=cfg.micro_batch,
                             rank=state.process_index, world=state.num_processes)
    train(trainer, cfg.out, warmup=cfg.warmup, log_every=cfg.log_every)
    if state.is_main_process:
        print(f"saved {cfg.out}")


if __name__ == "__main__":
    main()
