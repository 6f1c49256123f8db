"""Time compression methods alone on the GPU: features already on the device, bf16, CUDA events.

    python scripts/bench_compression.py                      # compact (16 latent frames) and dense (1800)
    python scripts/bench_compression.py --cases compact --dim 1024 --out results/bench.json

Each case builds latent frames of 24x24 tokens (smoothly drifting, so the temporal branch has
residuals to keep) and times each method's ``compress`` with CUDA events: warm-up runs, then the
median of ``--repeats``. In the same process it times a device-to-device copy of the features (one
read and one write of the input: the memory floor of any method that reads everything) and gives
each method's time as a ratio to it. Peak extra memory is what the method allocates beyond the
input. Prints a table and writes JSON with the GPU's name.
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

from freres_lmms.core import FreResMethod, UniformMethod, VideoTokens  # noqa: E402
from freres_lmms.presets import method_preset  # noqa: E402

# The paper's instantiations (conf/method presets): compact (Figure 2: 8 anchors x 512, 8 groups)
# and the dense 30-FPS minute of Table 3 (1800 latent frames -> 46,080 tokens).
CASES = {
    "compact": {"frames": 16, "methods": {"freres": method_preset("freres"), "uniform": UniformMethod(stride=2)}},
    "dense": {"frames": 1800, "methods": {"freres": method_preset("freres_dense"), "uniform": UniformMethod(budget=46080)}},
}


def drifting_features(frames: int, side: int, dim: int, device, chunk: int = 200) -> torch.Tensor:
    """bf16 [T, side, side, D]: a base grid plus a slow drift and small noise, built in chunks."""
    g = torch.Generator(device=device).manual_seed(0)
    base = torch.randn(side, side, dim, device=device, generator=g)
    drift = torch.randn(side, side, dim, device=device, generator=g)
    out = torch.empty(frames, side, side, dim, device=device, dtype=torch.bfloat16)
    for lo in range(0, frames, chunk):  # building the input, not the timed code
        t = torch.arange(lo, min(lo + chunk, frames), device=device, dtype=torch.float32)
        phase = torch.sin(3 * t / frames)[:, None, None, None]
        noise = 0.01 * torch.randn(len(t), side, side, dim, device=device, generator=g)
        out[lo:lo + len(t)] = (base + 0.3 * phase * drift + noise).to(torch.bfloat16)
    return out


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
    features = drifting_features(16, 24, 256, device).float()
    video = VideoTokens(features, positions(16, 24, device))
    cpu = VideoTokens(features.cpu(), video.positions.cpu())
    gpu_out, cpu_out = FreResMethod()(video), FreResMethod()(cpu)
    same = torch.equal(gpu_out.positions.cpu(), cpu_out.positions) and torch.equal(gpu_out.slots.cpu(), cpu_out.slots)
    error = ((gpu_out.features.cpu() - cpu_out.features).norm() / cpu_out.features.norm()).item()
    torch.backends.cuda.matmul.allow_tf32 = True
    return {"tokens_gpu": gpu_out.num_tokens, "tokens_cpu": cpu_out.num_tokens, "positions_and_slots_equal": same,
            "relative_error": error}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--side", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_compression.json"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_compression.py times GPU code: no CUDA device here")
    device = torch.device("cuda")
    check = check_against_cpu(device)
    print("GPU vs CPU (fp32, compact, D=256):", check)
    rows = []
    for case in args.cases:
        spec = CASES[case]
        features = drifting_features(spec["frames"], args.side, args.dim, device)
        video = VideoTokens(features, positions(spec["frames"], args.side, device))
        input_bytes = features.numel() * features.element_size()
        copy_ms, _ = time_it(lambda f=features: f.clone(), args.warmup, args.repeats)
        for name, method in spec["methods"].items():
            out = method(video)
            ms, peak = time_it(lambda m=method, v=video: m(v), args.warmup, args.repeats)
            rows.append({"case": case, "method": name, "frames": spec["frames"], "grid": f"{args.side}x{args.side}",
                         "dim": args.dim, "input_tokens": video.num_tokens, "output_tokens": out.num_tokens,
                         "ms": round(ms, 3), "copy_ms": round(copy_ms, 3), "ratio_to_copy": round(ms / copy_ms, 2),
                         "input_gb": round(input_bytes / 1e9, 3), "peak_extra_gb": round(peak / 1e9, 3),
                         "peak_extra_over_input": round(peak / input_bytes, 2),
                         "counts": {k: v for k, v in getattr(method, "last_counts", {}).items() if k != "plan"}})
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
        print(f"{r['case']:8s} {r['method']:8s} {r['input_tokens']:>10d} {r['output_tokens']:>7d} {r['ms']:8.3f} "
              f"{r['copy_ms']:8.3f} {r['ratio_to_copy']:7.2f} {r['peak_extra_over_input']:10.2f}")


if __name__ == "__main__":
    main()
