"""Time compression methods alone on the GPU: features already on the device, bf16, CUDA events.

    python scripts/bench_compression.py                      # every case below
    python scripts/bench_compression.py --cases compact --dim 1024 --out results/bench.json

Each case builds latent frames of 24x24 tokens (smoothly drifting, so the temporal branch has
residuals to keep) and times each method's ``compress`` with CUDA events: warm-up runs, then the
median of ``--repeats``. In the same process it times a device-to-device copy of the features (one
read and one write of the input: the memory floor of any method that reads everything) and gives
each method's time as a ratio to it. Peak extra memory is what the method allocates beyond the
input. ``D = 4096`` and the LLM-side shapes are Qwen3-VL-8B's (36 layers, 32 query and 8 KV heads
of 128): methods that act inside the LLM are timed on their per-step work, DyCoke's decode-time
selection (one attention row at layer L-1 plus the top-k, per generated token) and AdaReTaKe's
per-chunk scoring of all 36 layers plus its layer allocation and top-k. Prints a table and
writes JSON with the GPU's name.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpu import cuda_or_exit

from freres_lmms.core import FreResMethod, UniformMethod, VideoTokens, build_method
from freres_lmms.core.adaretake import chunk_scores
from freres_lmms.core.dycoke import DecodeSelection, decode_attention_row
from freres_lmms.presets import method_preset
from freres_lmms.tokens import drifting_features

# The paper's instantiations (conf/method presets): compact (Figure 2: 8 anchors x 512, 8 groups)
# and the dense 30-FPS minute of Table 3 (1800 latent frames -> 46,080 tokens); the baselines at
# their official defaults (64 frames) and near Table 3's budgets (1800 frames).
CASES = {
    "compact": {"frames": 16, "methods": lambda: {"freres": method_preset("freres"), "uniform": UniformMethod(stride=2)}},
    "long": {"frames": 64, "methods": lambda: {
        "uniform": UniformMethod(budget=0.25), "fourier": build_method("fourier"), "cdpruner": build_method("cdpruner"),
        "dycoke": build_method("dycoke"), "adaretake": build_method("adaretake"),
        "freres": method_preset("freres", anchors=16, groups=16)}},
    "dense": {"frames": 1800, "methods": lambda: {
        "freres": method_preset("freres_dense"), "uniform": UniformMethod(budget=46080),
        "fourier": build_method("fourier", rho=1 / 3), "cdpruner": build_method("cdpruner", budget=46080),
        "dycoke": build_method("dycoke"), "adaretake": build_method("adaretake")}},
}
LLM = {"layers": 36, "heads": 32, "kv_heads": 8, "head_dim": 128}  # Qwen3-VL-8B


def positions(frames: int, side: int, device) -> torch.Tensor:
    t, h, w = torch.meshgrid(torch.arange(frames, device=device), torch.arange(side, device=device),
                             torch.arange(side, device=device), indexing="ij")
    return torch.stack([t, h, w]) + 16


def time_it(fn, warmup: int, repeats: int) -> tuple[float, int]:
    """Median milliseconds of ``fn()`` and the peak bytes it allocated beyond what was live before."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), torch.cuda.max_memory_allocated() - before


def check_against_cpu(device) -> dict:
    """The compact case in fp32 on the GPU and on the CPU: the same counts and positions, features
    within fp32 rounding (relative error of the whole output)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    features = drifting_features(16, 24, 24, 256, device, torch.bfloat16, chunk=200).float()
    video = VideoTokens(features, positions(16, 24, device))
    cpu = VideoTokens(features.cpu(), video.positions.cpu())
    gpu_out, cpu_out = FreResMethod()(video), FreResMethod()(cpu)
    same = torch.equal(gpu_out.positions.cpu(), cpu_out.positions) and torch.equal(gpu_out.slots.cpu(), cpu_out.slots)
    error = ((gpu_out.features.cpu() - cpu_out.features).norm() / cpu_out.features.norm()).item()
    torch.backends.cuda.matmul.allow_tf32 = True
    return {"tokens_gpu": gpu_out.num_tokens, "tokens_cpu": cpu_out.num_tokens, "positions_and_slots_equal": same,
            "relative_error": error}


def _counts(method) -> dict:
    counts = getattr(method, "last_counts", {}) or {}
    return {k: v for k, v in counts.items() if isinstance(v, (int, float, str)) and k != "plan"}


def llm_side(case: str, video: VideoTokens, warmup: int, repeats: int) -> list[dict]:
    """Per-step work of the methods that act inside the LLM, at Qwen3-VL-8B's shapes."""
    device = video.features.device
    rows = []
    dycoke = build_method("dycoke")
    kept = dycoke.select(video).numel()  # the prefill DyCoke leaves: the keys each decode step sees
    g = torch.Generator(device=device).manual_seed(1)
    keys = kept + 64
    q = torch.randn(1, LLM["heads"], 1, LLM["head_dim"], device=device, dtype=torch.bfloat16, generator=g)
    k = torch.randn(1, LLM["kv_heads"], keys, LLM["head_dim"], device=device, dtype=torch.bfloat16, generator=g)
    visual = torch.zeros(1, keys, dtype=torch.bool, device=device)
    visual[:, 32:32 + kept] = True
    selection = DecodeSelection(visual, dycoke.prune_ratio)
    step = lambda: selection.step(decode_attention_row(q, k, None, LLM["head_dim"] ** -0.5))
    ms, peak = time_it(step, warmup, repeats)
    rows.append({"case": case, "method": "dycoke_decode_step", "frames": video.grid[0], "keys": keys, "ms": round(ms, 3),
                 "peak_extra_gb": round(peak / 1e9, 3), "what": "attention row at layer L-1 + top-k, per generated token"})
    del k
    adaretake = build_method("adaretake")
    plan = adaretake.plan(video.features, text_tokens=64)
    length = int(plan.lengths[0])
    q = torch.randn(LLM["layers"], LLM["heads"], 64, LLM["head_dim"], device=device, dtype=torch.bfloat16, generator=g)
    k = torch.randn(LLM["layers"], LLM["kv_heads"], length, LLM["head_dim"], device=device, dtype=torch.bfloat16, generator=g)
    scores = torch.stack([chunk_scores(q[i], k[i]) for i in range(LLM["layers"])])
    chunk = lambda: adaretake.compress_chunk(torch.stack([chunk_scores(q[i], k[i]) for i in range(LLM["layers"])]), plan, 0)
    ms, peak = time_it(chunk, warmup, repeats)
    plan_ms, _ = time_it(lambda: adaretake.plan(video.features, text_tokens=64), warmup, repeats)
    counts = adaretake.compress_chunk(scores, plan, 0)[0]
    rows.append({"case": case, "method": "adaretake_chunk", "frames": video.grid[0], "chunk_tokens": length,
                 "chunks": len(plan.lengths), "ms": round(ms, 3), "plan_ms": round(plan_ms, 3),
                 "peak_extra_gb": round(peak / 1e9, 3), "kept_mean_over_layers": round(float(counts.float().mean()), 1),
                 "what": "prompt-to-chunk scores of 36 layers + layer allocation + top-k, per chunk; plan once per video"})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--side", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_compression.json"))
    args = parser.parse_args(argv)
    device = cuda_or_exit("bench_compression.py", "times GPU code")
    check = check_against_cpu(device)
    print("GPU vs CPU (fp32, compact, D=256):", check)
    rows = []
    for case in args.cases:
        spec = CASES[case]
        features = drifting_features(spec["frames"], args.side, args.side, args.dim, device, torch.bfloat16, chunk=200)
        question = torch.randn(16, args.dim, device=device, generator=torch.Generator(device=device).manual_seed(2))
        video = VideoTokens(features, positions(spec["frames"], args.side, device), query=question.to(features.dtype))
        input_bytes = features.numel() * features.element_size()
        copy_ms, _ = time_it(lambda f=features: f.clone(), args.warmup, args.repeats)
        for name, method in spec["methods"]().items():
            out = method(video)
            ms, peak = time_it(lambda m=method, v=video: m(v), args.warmup, args.repeats)
            rows.append({"case": case, "method": name, "frames": spec["frames"], "grid": f"{args.side}x{args.side}",
                         "dim": args.dim, "input_tokens": video.num_tokens, "output_tokens": out.num_tokens,
                         "ms": round(ms, 3), "copy_ms": round(copy_ms, 3), "ratio_to_copy": round(ms / copy_ms, 2),
                         "input_gb": round(input_bytes / 1e9, 3), "peak_extra_gb": round(peak / 1e9, 3),
                         "peak_extra_over_input": round(peak / input_bytes, 2),
                         "counts": _counts(method)})
            del out
        rows += llm_side(case, video, args.warmup, args.repeats)
        del features, video
        torch.cuda.empty_cache()
    info = {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__, "dtype": "bfloat16",
            "timing": f"CUDA events, median of {args.repeats} after {args.warmup} warm-up runs",
            "check_gpu_vs_cpu": check, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=1) + "\n")
    print(f"{info['gpu']}, torch {info['torch']}, bf16, D={args.dim}")
    print(f"{'case':8s} {'method':8s} {'tokens in':>10s} {'out':>7s} {'ms':>8s} {'copy ms':>8s} {'x copy':>7s} {'peak/input':>10s}")
    for r in rows:
        if "input_tokens" not in r:
            print(f"{r['case']:8s} {r['method']:18s} {r['ms']:8.3f} ms  ({r['what']})")
            continue
        print(f"{r['case']:8s} {r['method']:8s} {r['input_tokens']:>10d} {r['output_tokens']:>7d} {r['ms']:8.3f} "
              f"{r['copy_ms']:8.3f} {r['ratio_to_copy']:7.2f} {r['peak_extra_over_input']:10.2f}")


if __name__ == "__main__":
    main()
