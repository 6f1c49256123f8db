"""The trained testbed through the compression adapters on a GPU (bf16), against the CPU baseline.

    python scripts/gpu_testbed_check.py [--samples 140] [--out results/gpu_testbed_check.json]

For each testbed checkpoint and each check of the regression baseline (``full``, and every other
method at 50% and 25%), renders the first ``--samples`` test-split videos as the task's files hold
them (tensors, no mp4), compresses them with the adapter exactly as the lmms-eval wrapper does,
and reads the greedy answer letter from the last position. Prints accuracy and visual tokens next
to ``results/regression/baseline.json`` (CPU, fp32, through lmms-eval on the mp4 files): the two
paths differ in video coding and precision, so small differences are expected, large ones are not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from freres_lmms import regression  # noqa: E402
from freres_lmms.core import CompressionError, build_method  # noqa: E402
from freres_lmms.data.checkpoints import MODEL_CLASSES, resolve_pretrained  # noqa: E402
from freres_lmms.data.synthetic import QTYPES, SPLIT_SEEDS  # noqa: E402
from freres_lmms.data.training import SyntheticBatches  # noqa: E402
from freres_lmms.models import ADAPTERS, family_of  # noqa: E402


@torch.no_grad()
def check(checkpoint: str, samples: int, device: torch.device, chunk: int = 35) -> dict:
    from transformers import AutoProcessor

    path = resolve_pretrained(checkpoint)
    family = family_of(path)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = MODEL_CLASSES[family].from_pretrained(path, dtype=dtype).to(device).eval()
    processor = AutoProcessor.from_pretrained(path)
    adapter = ADAPTERS[family](model, processor)
    batches = SyntheticBatches(processor, frames=16, size=224, fps=8, device=device)
    scene, questions = batches.draw(samples, SPLIT_SEEDS["test"], on_cpu=True)
    rows = {}
    for method_name, knobs in regression.runs():
        method = build_method(method_name, **knobs)
        try:
            rows[regression.key(checkpoint, method_name, knobs)] = one_check(
                adapter, model, batches, scene, questions, method, samples, chunk, device)
        except CompressionError as err:  # a budget the method refuses (DyCoke below its whole frames)
            rows[regression.key(checkpoint, method_name, knobs)] = {"refused": str(err)}
    return rows


def one_check(adapter, model, batches, scene, questions, method, samples: int, chunk: int, device) -> dict:
    correct, tokens = [], []
    for lo in range(0, samples, chunk):
        part_scene, part_q = (p.map(lambda v: v[lo:lo + chunk]) for p in (scene, questions))
        inputs = batches.inputs(part_scene, part_q, with_answers=False)
        # right-padded training inputs -> left-padded, as a processor with padding_side="left" gives
        length = inputs["attention_mask"].sum(1)
        shift = inputs["input_ids"].shape[1] - length
        order = (torch.arange(inputs["input_ids"].shape[1], device=device)[None] - shift[:, None]) % inputs["input_ids"].shape[1]
        for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
            inputs[key] = inputs[key].gather(1, order)
        kwargs, stats = adapter.compress_inputs(inputs, method)
        logits = model(**kwargs, logits_to_keep=1).logits[:, -1]
        correct.append(logits.argmax(-1) == batches.letter_ids[part_q.answer])
        tokens += [s.visual_tokens_after for s in stats]
    correct = torch.cat(correct)
    row = {q: round(100 * correct[questions.qtype == i].float().mean().item(), 1) for i, q in enumerate(QTYPES)}
    row["all"] = round(100 * correct.float().mean().item(), 1)
    row["visual_tokens"] = round(sum(tokens) / len(tokens), 1)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=regression.LIMIT)
    parser.add_argument("--out", default=str(ROOT / "results" / "gpu_testbed_check.json"))
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    measured = {}
    for checkpoint in regression.CHECKPOINTS:
        measured.update(check(checkpoint, args.samples, device))
    baseline = json.loads(regression.BASELINE.read_text())["checks"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    dtype = "bf16" if device.type == "cuda" else "fp32"
    print(f"{name}, {dtype}, {args.samples} test samples (tensors) vs the CPU baseline (fp32, lmms-eval, mp4)")
    print(f"{'check':40s} {'all':>6s} {'base':>6s} {'tokens':>7s} {'base':>7s}")
    for key, row in measured.items():
        ref = baseline.get(key, {})
        if "refused" in row:
            print(f"{key:40s} refused ({ref.get('errors', 0)} failed samples in the baseline): {row['refused']}")
            continue
        print(f"{key:40s} {row['all']:6.1f} {ref.get('all', float('nan')):6.1f} {row['visual_tokens']:7.1f} "
              f"{ref.get('visual_tokens', float('nan')):7.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": name, "dtype": dtype, "torch": torch.__version__, "samples": args.samples,
                               "checks": measured}, indent=1) + "\n")


if __name__ == "__main__":
    main()
