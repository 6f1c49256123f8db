"""Fre-Res Table 3 on a GPU: tokens, stage times, TTFT and peak memory of each row at 1800 frames.

``python scripts/profile_table3.py [overrides]`` (``conf/profile.yaml``; ``make profile``). The model is
``conf/model``'s architecture with random weights (``pretrained=`` takes a checkpoint); the video is
a synthetic 60 s, 30 FPS clip of 768x768 frames made in memory chunk by chunk (``video.path=`` reads
a file). Every row runs the streamed pipeline: frames preprocessed ``stream.chunk_frames`` at a time,
the vision tower per chunk, the method's stream, then the LLM prefill in pieces
(``models.prefill``) or the method's own LLM stage (AdaReTaKe), and a 16-token greedy decode.

Per row (median of ``runs`` after a warm-up on a short clip): visual and text tokens, seconds of
frame reading (decode), preprocessing, vision, compression, LLM prefill (to the first token), the
decode, the end-to-end TTFT (decode excluded), and peak allocated GPU memory of the whole row and
of its LLM stage. An out-of-memory row is recorded as OOM. The same run measures the GPU's bf16
matmul rate, so each prefill is also given as a multiple of its FLOP floor (dense products of the
decoder layers plus causal attention), and the LLM-stage peak beside weights + KV cache.
"""

from __future__ import annotations

import json
import sys
import statistics
import time
from pathlib import Path

import torch

from ..core import CompressionError, build_method
from ..core.dycoke import TTMPlan
from ..presets import method_preset

ROOT = Path(__file__).resolve().parents[2]

# ../shared/docs/model-configs.md: Qwen3-VL-8B-Instruct (conf/model/qwen3_vl_8b.yaml holds the sizes it names)
QWEN3_VL_8B_TEXT = {"hidden_size": 4096, "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
                    "head_dim": 128, "intermediate_size": 12288, "vocab_size": 151936, "max_position_embeddings": 262144}
QWEN3_VL_8B_VISION = {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16, "out_hidden_size": 4096,
                      "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
                      "deepstack_visual_indexes": [8, 16, 24], "num_position_embeddings": 2304}

#: row id -> (label, method factory); the paper's rows first, then the budget-matched baselines
ROWS = {
    "vanilla_dense_30fps": ("Vanilla (Dense 30 FPS)", lambda: build_method("full")),
    "uniform_1fps": ("Uniform Sampling (1 FPS)", lambda: build_method("uniform", stride=30)),
    "fourier_framewise_spatial8": ("Fourier (Frame-wise Spatial 8)", lambda: build_method("fourier", budget=129600)),
    "freres": ("Fre-Res (Ours)", lambda: method_preset("freres_dense")),
    "cdpruner_matched": ("CDPruner at Fre-Res's 46,080", lambda: build_method("cdpruner", budget=46080)),
    "adaretake_matched": ("AdaReTaKe at Fre-Res's 46,080", lambda: build_method("adaretake", budget=46080)),
    "dycoke_floor": ("DyCoke at its floor", None),
}


# -- the device: memory figures come from CUDA's allocator; on the CPU (a smoke run of the path) they are 0
def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device) -> int:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0


def _allocated(device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def _empty_cache(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- the model and the clip ------------------------------------------------------------------------
def build_adapter(cfg, device):
    from transformers import AutoConfig, AutoProcessor

    from ..data.checkpoints import resolve_pretrained
    from ..models import ADAPTERS

    if cfg.model.family != "qwen3vl":
        raise ValueError(f"profile: Table 3 is on Qwen3-VL; model {cfg.model.name} is {cfg.model.family}")
    adapter_class = ADAPTERS[cfg.model.family]
    chunk = int(cfg.stream.vision_chunk_tokens)
    if cfg.pretrained:
        source = resolve_pretrained(str(cfg.pretrained))  # a directory, a hub id, or testbed-qwen3vl
        model = adapter_class.model_class.from_pretrained(source, dtype=torch.bfloat16, attn_implementation="sdpa",
                                                          device_map=str(device)).eval()
        processor = AutoProcessor.from_pretrained(source)
    else:
        source = resolve_pretrained("testbed-qwen3vl")  # tokenizer, processor and special ids (patch 16, merge 2)
        config = AutoConfig.from_pretrained(source)
        text = {**QWEN3_VL_8B_TEXT, "hidden_size": cfg.model.hidden_size, "intermediate_size": cfg.model.intermediate_size,
                "num_hidden_layers": cfg.model.num_layers}
        config.text_config.update(text)
        config.text_config.rope_parameters = {"rope_type": "default", "rope_theta": 5_000_000.0,
                                              "mrope_section": [24, 20, 20], "mrope_interleaved": True}
        config.vision_config.update({**QWEN3_VL_8B_VISION, "out_hidden_size": cfg.model.hidden_size,
                                     "patch_size": cfg.model.patch_size, "spatial_merge_size": cfg.model.spatial_merge_size,
                                     "temporal_patch_size": cfg.model.temporal_patch_size})
        config.tie_word_embeddings = False
        torch.manual_seed(0)
        with torch.device(device):
            model = adapter_class.model_class._from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa").eval()
        processor = AutoProcessor.from_pretrained(source)
    return adapter_class(model, processor, vision_chunk_tokens=chunk)


def synthetic_source(frames: int, height: int, width: int, fps: float):
    """A clip made chunk by chunk: a drifting gradient and a square crossing the frame (uint8)."""
    from ..models.streaming import FrameSource

    ys = torch.linspace(0, 1, height)[:, None]
    xs = torch.linspace(0, 1, width)[None, :]

    def read(lo: int, hi: int) -> torch.Tensor:
        t = torch.arange(lo, hi, dtype=torch.float32)[:, None, None] / max(frames - 1, 1)
        shape = (t.shape[0], height, width)
        red = ((ys + t) % 1.0 * 255).expand(shape)
        green = (xs * 255).expand(shape)
        blue = ((xs + ys) / 2 * 255).expand(shape)
        out = torch.stack([red, green, blue], 1)
        side = height // 8
        top = (t[:, 0, 0] * (height - side)).long()
        rows = torch.arange(height)[None, :]
        inside = (rows >= top[:, None]) & (rows < top[:, None] + side)  # [n, H]
        out[:, :, :, width // 3: width // 3 + side] = torch.where(inside[:, None, :, None], 255.0,
                                                                   out[:, :, :, width // 3: width // 3 + side])
        return out.to(torch.uint8)

    return FrameSource(frames, height, width, float(fps), list(range(frames)), frames, read)


def frame_source(cfg, frames: int):
    from ..models.streaming import FrameSource

    if cfg.video.path:
        source = FrameSource.from_file(cfg.video.path, frames)
    else:
        source = synthetic_source(frames, int(cfg.video.height), int(cfg.video.width), float(cfg.video.fps))
    return source.per_frame() if cfg.frame_encoding == "per_frame" else source


# -- FLOPs and memory floors -----------------------------------------------------------------------
def matmul_tflops(device, m: int = 8192, k: int = 4096, n: int = 12288, repeats: int = 50) -> float:
    """bf16 matmul rate at prefill shapes on this GPU (TFLOP/s; on the CPU a small product, for the path)."""
    if device.type != "cuda":
        m, k, n, repeats = 256, 256, 256, 5
    a = torch.randn(m, k, device=device, dtype=torch.bfloat16)
    b = torch.randn(k, n, device=device, dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * m * k * n * repeats / (time.perf_counter() - started) / 1e12


def attention_check(device, heads: int = 32, kv_heads: int = 8, q_len: int = 512, kv_len: int = 2048) -> dict:
    """Largest difference of the piece attention (each kernel) from masked SDPA at a GQA shape, bf16
    on the GPU: the evidence that the prefill in pieces computes the same attention there."""
    from ..models.attention import KERNELS, prefix_causal_attention

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)
    query = torch.randn(1, q_len, heads, 128, device=device, dtype=dtype, generator=gen).transpose(1, 2)
    key, value = (torch.randn(1, kv_heads, kv_len, 128, device=device, dtype=dtype, generator=gen) for _ in range(2))
    visible = torch.ones(q_len, kv_len, dtype=torch.bool, device=device).tril(kv_len - q_len)
    groups = heads // kv_heads
    expected = torch.nn.functional.scaled_dot_product_attention(
        query.float(), key.float().repeat_interleave(groups, 1), value.float().repeat_interleave(groups, 1), attn_mask=visible)
    return {kernel: float((prefix_causal_attention(query, key, value, kernel=kernel).float() - expected).abs().max())
            for kernel in KERNELS}


def prefill_flops(model, tokens: int) -> float:
    """Dense products of the decoder layers (2 x weights x tokens) plus causal attention (QK and PV)."""
    text = model.config.get_text_config()
    dense = sum(p.numel() for p in model.model.language_model.layers.parameters())
    width = text.num_attention_heads * text.head_dim
    return 2.0 * dense * tokens + 2.0 * tokens * tokens * width * text.num_hidden_layers


def kv_bytes(model, tokens: int) -> int:
    text = model.config.get_text_config()
    return tokens * text.num_hidden_layers * 2 * text.num_key_value_heads * text.head_dim * 2  # bf16 K and V


# -- one row ---------------------------------------------------------------------------------------
def prompt(adapter, question: str) -> str:
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    return adapter.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def paper_context(kwargs: dict, video_token_id: int, text_tokens: int = 22) -> dict:
    """The row's prompt cut to the paper's accounting: its visual tokens and ``text_tokens`` text tokens
    (the first ``text_tokens - 2`` and the last 2), positions kept and row 0 renumbered."""
    ids = kwargs["input_ids"][0]
    visual = ids == video_token_id
    text = (~visual).nonzero().flatten()
    keep = visual.clone()
    keep[text[: text_tokens - 2]] = True
    keep[text[-2:]] = True
    out = {"input_ids": kwargs["input_ids"][:, keep], "mm_token_type_ids": kwargs["mm_token_type_ids"][:, keep],
           "attention_mask": kwargs["attention_mask"][:, keep], "position_ids": kwargs["position_ids"][:, :, keep].clone(),
           "mm_encoder_outputs": kwargs["mm_encoder_outputs"]}
    out["position_ids"][0, 0] = torch.arange(int(keep.sum()), device=ids.device)
    return out


FROM_CONFIG = "config"  # llm_stage's backend and chunk: cfg.prefill's (None is PyTorch's own kernel order)


def llm_stage(adapter, method, kwargs: dict, cfg, decode_tokens: int, backend=FROM_CONFIG, chunk=FROM_CONFIG,
              release: bool = False) -> dict:
    """Prefill to the first token, then the decode; seconds and the stage's peak memory."""
    from ..models import CompressionStats
    from ..models.prefill import chunked_prefill, greedy_decode
    from ..models.stages import stage_for

    model, device = adapter.model, adapter.model.device
    backend = cfg.prefill.backend if backend == FROM_CONFIG else backend
    chunk = int(cfg.prefill.chunk_tokens) if chunk == FROM_CONFIG else chunk
    length = int(kwargs["input_ids"].shape[1])
    _sync(device)
    _reset_peak(device)
    started = time.perf_counter()
    stage = stage_for(method.name)
    if stage is not None and method.name == "adaretake":  # its chunked prefill compresses the KV cache
        settings = {"max_new_tokens": decode_tokens, "do_sample": False,
                    "pad_token_id": adapter.processor.tokenizer.pad_token_id, "eos_token_id": None}
        stage(adapter, method, kwargs, settings, [CompressionStats()])
        counts = method.last_counts
        return {"prefill_s": counts["prefill_seconds"], "decode_s": counts["decode_seconds"],
                "llm_peak_bytes": _peak(device), "prompt_tokens": length,
                "kv_visual_tokens": counts.get("total")}
    logits, cache = chunked_prefill(model, kwargs, chunk or length, backend, release=release)
    _sync(device)
    prefill = time.perf_counter() - started
    peak = _peak(device)
    started = time.perf_counter()
    greedy_decode(model, cache, logits, kwargs["position_ids"][:, :, -1:], decode_tokens, cfg.prefill.decode_backend)
    _sync(device)
    decode = time.perf_counter() - started
    del cache
    return {"prefill_s": prefill, "decode_s": decode, "llm_peak_bytes": peak, "prompt_tokens": length}


def run_row(adapter, method, cfg, frames: int, sweep: bool = False) -> dict:
    """One run of a row: the streamed front (frames -> vision -> method) and the LLM stage."""
    from ..models.streaming import StreamTimer, streamed_inputs

    device = adapter.model.device
    _sync(device)
    _reset_peak(device)
    timer = StreamTimer()
    started = time.perf_counter()
    inputs = streamed_inputs(adapter.processor, [prompt(adapter, cfg.question)], [frame_source(cfg, frames)],
                             int(cfg.stream.chunk_frames), device, timer)
    kwargs, stats = adapter.compress_inputs(inputs, method)
    _sync(device)
    front = time.perf_counter() - started
    front_peak = _peak(device)
    ids = kwargs["input_ids"][0]
    visual = int((ids == adapter.video_token_id).sum())
    row = {"visual_tokens": visual, "text_tokens": int(ids.numel()) - visual,
           "visual_tokens_before": stats[0].visual_tokens_before, "decode_frames_s": timer.decode,
           "preprocess_s": timer.preprocess, "vision_s": stats[0].vision_seconds,
           "compression_s": stats[0].compression_seconds, "compression_finish_s": stats[0].finish_seconds, "front_s": front, "front_peak_bytes": front_peak}
    paper = paper_context(kwargs, adapter.video_token_id) if method.name == "freres" else None
    # the row's own prompt; then, its kwargs gone, the paper's context takes the features and frees
    # them piece by piece (the LLM-stage peak of the bar)
    row.update(llm_stage(adapter, method, kwargs, cfg, int(cfg.decode_tokens), release=paper is None))
    row["peak_bytes"] = max(front_peak, row["llm_peak_bytes"])
    row["ttft_s"] = front - timer.decode + row["prefill_s"]
    del kwargs, inputs
    if paper is not None:
        if sweep:
            row["prefill_sweep"] = prefill_sweep(adapter, method, paper, cfg)
        row["paper_context"] = llm_stage(adapter, method, paper, cfg, int(cfg.decode_tokens), release=True)
    return row


def prefill_sweep(adapter, method, kwargs, cfg) -> list[dict]:
    """The paper-context prefill under each SDPA kernel order and piece size (best of 3 after one)."""
    out = []
    length = int(kwargs["input_ids"].shape[1])
    for backend in (None, "cudnn", "flash"):
        for chunk in (0, 16384, 8192):
            times, peaks = [], []
            try:
                for _ in range(3):
                    r = llm_stage(adapter, method, kwargs, cfg, 1, backend=backend, chunk=chunk)
                    times.append(r["prefill_s"])
                    peaks.append(r["llm_peak_bytes"])
            except torch.cuda.OutOfMemoryError:
                out.append({"backend": backend or "default", "chunk_tokens": chunk or length, "error": "OOM"})
                continue
            out.append({"backend": backend or "default", "chunk_tokens": chunk or length, "prefill_s": min(times[1:]),
                        "llm_peak_bytes": max(peaks)})
    return out


def median_row(runs: list[dict]) -> dict:
    row = dict(runs[-1])
    for key, value in runs[0].items():
        if isinstance(value, float):
            row[key] = statistics.median(r[key] for r in runs)
    if "paper_context" in runs[0]:
        row["paper_context"] = {k: statistics.median(r["paper_context"][k] for r in runs) if isinstance(v, float) else v
                                for k, v in runs[0]["paper_context"].items()}
    row["runs"] = [{k: v for k, v in r.items() if k != "prefill_sweep"} for r in runs]
    return row


def dycoke_floor(frames: int, per_frame: int) -> int:
    return TTMPlan.build(frames).count(per_frame, 0)


# -- the table -------------------------------------------------------------------------------------
def profile(cfg, partial: Path | None = None) -> dict:
    from ..config import ConfigError

    unknown = [r for r in cfg.rows if r not in ROWS]
    if unknown:
        raise ConfigError(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    if str(cfg.device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is here (device=cpu runs the path, without memory figures)")
    device = torch.device(cfg.device)
    adapter = build_adapter(cfg, device)
    model = adapter.model
    _sync(device)
    weights = _allocated(device)
    rate = matmul_tflops(device)
    checked = attention_check(device)
    frames = int(cfg.video.frames)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (no memory figures)",
              "torch": torch.__version__,
              "transformers": __import__("transformers").__version__, "model": cfg.model.name,
              "pretrained": cfg.pretrained or "random weights", "frames": frames, "frame_encoding": cfg.frame_encoding,
              "size": [int(cfg.video.height), int(cfg.video.width)], "weights_bytes": weights,
              "matmul_tflops": rate, "prefill": {"chunk_tokens": int(cfg.prefill.chunk_tokens), "backend": cfg.prefill.backend,
                                                  "decode_backend": cfg.prefill.decode_backend},
              "runs": int(cfg.runs), "attention_max_error": checked, "rows": {}}
    slices = frames if cfg.frame_encoding == "per_frame" else -(-frames // 2)
    per_slice = (int(cfg.video.height) // (cfg.model.patch_size * cfg.model.spatial_merge_size)) * \
                (int(cfg.video.width) // (cfg.model.patch_size * cfg.model.spatial_merge_size))
    for row_id in cfg.rows:
        label, factory = ROWS[row_id]
        print(f"[profile] {row_id} ...", flush=True)
        if row_id == "dycoke_floor":
            floor = dycoke_floor(slices, per_slice)
            row = {"label": label, "status": "refused", "visual_tokens": floor,
                   "note": f"min {floor:,} tokens: TTM keeps whole frames ({slices} slices of {per_slice})"}
            if cfg.measure_dycoke_floor:
                row = {**row, **measure(adapter, lambda: build_method("dycoke", budget=floor), cfg, frames, 1), "status": "ok"}
            result["rows"][row_id] = row
            continue
        runs = int(cfg.row_runs.get(row_id, cfg.runs)) if cfg.row_runs else int(cfg.runs)
        result["rows"][row_id] = {"label": label, **measure(adapter, factory, cfg, frames, runs)}
        print(f"[profile] {row_id}: {summary(result['rows'][row_id])}", flush=True)
        if partial is not None:  # a run cut short keeps the rows it measured
            partial.write_text(json.dumps(result, indent=1, default=str) + "\n")
    for row in result["rows"].values():
        add_floors(row, model, rate, weights)
    from ..models.attention import FALLBACKS

    result["attention_fallbacks"] = dict(FALLBACKS)
    return result


def measure(adapter, factory, cfg, frames: int, runs: int) -> dict:
    device = adapter.model.device
    try:
        run_row(adapter, factory(), cfg, int(cfg.warmup_frames))  # kernels, allocator, plans
        measured = []
        for index in range(runs):  # the sweep once, with the last run
            measured.append(run_row(adapter, factory(), cfg, frames, sweep=bool(cfg.prefill.sweep) and index == runs - 1))
        row = median_row(measured)
        row["first_run_decode_s"] = measured[0]["decode_s"]  # new shapes: what per-shape planning would cost
        return {"status": "ok", **row}
    except torch.cuda.OutOfMemoryError as err:
        _empty_cache(device)
        return {"status": "OOM", "error": str(err).splitlines()[0][:300]}
    except CompressionError as err:
        return {"status": "refused", "error": str(err)}
    finally:
        _empty_cache(device)


def add_floors(row: dict, model, rate: float, weights: int) -> None:
    """Prefill as a multiple of its FLOP floor on this GPU; the LLM-stage peak beside weights + KV."""
    for part in (row, row.get("paper_context")):
        if not part or "prefill_s" not in part:
            continue
        tokens = part["prompt_tokens"]
        floor = prefill_flops(model, tokens) / (rate * 1e12)
        part["prefill_floor_s"] = floor
        part["prefill_over_floor"] = part["prefill_s"] / floor
        part["weights_plus_kv_bytes"] = weights + kv_bytes(model, tokens)
        part["llm_peak_over_floor_gib"] = (part["llm_peak_bytes"] - part["weights_plus_kv_bytes"]) / 2 ** 30


def summary(row: dict) -> str:
    if row.get("status") != "ok":
        return f"{row.get('status')}: {row.get('error') or row.get('note')}"
    return (f"visual {row['visual_tokens']:,} text {row['text_tokens']:,} vision {row['vision_s']:.2f}s "
            f"compress {row['compression_s'] * 1000:.1f}ms prefill {row['prefill_s']:.2f}s ttft {row['ttft_s']:.2f}s "
            f"peak {row['peak_bytes'] / 2 ** 30:.2f}GiB")


def main(argv: list[str]) -> int:
    from ..config import ConfigError, compose_profile

    try:
        cfg = compose_profile(argv)
        out = ROOT / cfg.out if not Path(cfg.out).is_absolute() else Path(cfg.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        result = profile(cfg, out.with_suffix(".partial.json"))
    except ConfigError as err:
        print(f"profile: {err}", file=sys.stderr)
        return 2
    out.with_suffix(".partial.json").unlink(missing_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    from .profile_render import render

    render(result, out)
    print(out.with_suffix(".md").read_text())
    return 0


__all__ = ["main", "profile", "prefill_flops", "kv_bytes", "paper_context", "dycoke_floor", "ROWS"]
