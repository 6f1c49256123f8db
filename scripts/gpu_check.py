"""Run the wrapper code on a GPU with the tiny checkpoints and save what happened.

For each family: plain ``generate`` vs our ``full`` path (token-for-token, bf16, on the GPU), then
lmms-eval's ``simple_evaluate`` on the synthetic task with ``full`` and ``uniform`` through the
registered model ids. Writes ``results/gpu_check.json`` with the device name. Usage:
``python scripts/gpu_check.py [--device cuda] [--limit 12]``.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def identity_on_device(family: str, path: Path, video: str, device: str) -> dict:
    from transformers import AutoProcessor

    from freres_lmms.core import FullMethod
    from freres_lmms.data.video import load_video
    from freres_lmms.models import ADAPTERS

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = ADAPTERS[family].model_class.from_pretrained(path, dtype=dtype).to(device).eval()
    processor = AutoProcessor.from_pretrained(path)
    clip = load_video(video, 16)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = dict(processor(text=[text], videos=[clip.frames], video_metadata=[clip.metadata()], return_tensors="pt").to(device))
    plain = model.generate(**inputs, max_new_tokens=12, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    kwargs, stats = ADAPTERS[family](model, processor).compress_inputs(inputs, FullMethod())
    ours = model.generate(**kwargs, max_new_tokens=12, do_sample=False)[0, kwargs["input_ids"].shape[1]:]
    return {"identical_tokens": bool(torch.equal(plain, ours)), "visual_tokens": stats[0].visual_tokens_after,
            "dtype": str(dtype)}


def evaluate(model_id: str, path: Path, device: str, limit: int, **knobs) -> dict:
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager

    lm = get_model(model_id)(pretrained=str(path), device=device, **knobs)
    out = simple_evaluate(model=lm, tasks=["freres_synthetic"], limit=limit, log_samples=True,
                          task_manager=TaskManager(include_path=str(ROOT / "task_configs"), include_defaults=False))
    records = [s["token_counts"][0] for s in out["samples"]["freres_synthetic"]]
    return {
        "samples": len(records),
        "errors": sum(r.get("error") is not None for r in records),
        "visual_tokens_before": sum(r["visual_tokens_before"] for r in records) / len(records),
        "visual_tokens_after": sum(r["visual_tokens_after"] for r in records) / len(records),
        "compression_ms": 1000 * sum(r["compression_seconds"] for r in records) / len(records),
        "generation_ms": 1000 * sum(r["generation_seconds"] for r in records) / len(records),
        "accuracy": out["results"]["freres_synthetic"]["accuracy,none"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--out", default=str(ROOT / "results" / "gpu_check.json"))
    args = parser.parse_args()
    from freres_lmms.data.checkpoints import ensure_checkpoint
    from freres_lmms.data.synthetic import ensure_synthetic
    from freres_lmms.families import FAMILIES

    jsonl = ensure_synthetic()
    video = str(jsonl.parent / json.loads(jsonl.read_text().splitlines()[0])["video"])
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    report = {"device": device_name, "torch": torch.__version__, "families": {}}
    for family in FAMILIES:
        path = ensure_checkpoint(family, ROOT / "checkpoints")
        report["families"][family] = {
            "identity": identity_on_device(family, path, video, args.device),
            "full": evaluate(f"full_{family}", path, args.device, args.limit),
            "uniform_stride2": evaluate(f"uniform_{family}", path, args.device, args.limit, stride=2),
        }
    import transformers

    report["transformers"] = transformers.__version__
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\ndevice: {device_name}")
    for family, rows in report["families"].items():
        print(f"{family}: identity={rows['identity']['identical_tokens']} "
              + " ".join(f"{k}: {v['visual_tokens_after']:.0f} tok, {v['compression_ms']:.2f} ms, errors {v['errors']}"
                         for k, v in rows.items() if k != "identity"))


if __name__ == "__main__":
    main()
