"""FLOPs of a configuration by equation S3 of the unified spatiotemporal supplement.

    FLOPs = sum_{i=1..T} (4 n_i d^2 + 2 n_i^2 d + 2 n_i d m) + R ((4 d^2 + 2 d m) + 2 (d n_i + d/2 (R + 1)))

T layers, n_i tokens at layer i after pruning, d the hidden size, m the FFN intermediate size,
R = 100 generated tokens. The first bracket is the prefill, the R term the decoding; we read the
printed formula (its parentheses do not balance) with the decode term inside the sum, per layer.
Methods differ in their per-layer token profile: most give every layer the same n; DyCoke's
decode-time pruning shrinks the visual KV from its ``layer`` on. AdaReTaKe's chunked prefill is
not one pass of n tokens: chunk c's L_c tokens go through the layer's projections and FFN and
attend to the KV kept from earlier chunks plus themselves, so its prefill term is
sum_c (4 L_c d^2 + 2 L_c d m + 2 L_c (K_<c + L_c) d) per layer (the same terms as S3, applied per
chunk), and it decodes against its stored KV.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig

R_DECODE = 100


def prefill_flops(tokens: list[int], d: int, m: int) -> float:
    """S3's prefill term: ``4 n d^2 + 2 n^2 d + 2 n d m`` summed over the layers' token counts."""
    return float(sum(4 * n * d * d + 2 * n * n * d + 2 * n * d * m for n in tokens))


def decode_flops(kv: list[int], d: int, m: int, r: int = R_DECODE) -> float:
    """S3's decode term: ``R ((4 d^2 + 2 d m) + 2 (d n + d/2 (R + 1)))`` over the layers' KV counts."""
    return float(sum(r * ((4 * d * d + 2 * d * m) + 2 * (d * n + d / 2 * (r + 1))) for n in kv))


def flops_s3(prefill: list[int], decode: list[int], d: int, m: int, r: int = R_DECODE) -> float:
    """Equation S3 with per-layer prefill tokens and per-layer KV tokens read while decoding."""
    if len(prefill) != len(decode):
        raise ValueError(f"per-layer token lists differ in length: {len(prefill)} vs {len(decode)}")
    return prefill_flops(prefill, d, m) + decode_flops(decode, d, m, r)


def chunked_prefill(lengths: list[int], kept: list[int], text: int, d: int, m: int, layers: int) -> float:
    """AdaReTaKe's prefill: each chunk attends to the KV kept so far (text first) and to itself."""
    total, past = 0.0, text
    for length, keep in zip(lengths, kept):
        total += 4 * length * d * d + 2 * length * d * m + 2 * length * (past + length) * d
        past += keep
    return total * layers


def layer_profile(method: str, knobs: dict, counts: dict, text: int, layers: int) -> tuple[list[int] | None, list[int]]:
    """(prefill tokens per layer, decode KV tokens per layer) of a resolved method; the prefill is
    None when it runs chunk by chunk (AdaReTaKe: ``chunked_prefill``)."""
    visual = counts["visual_tokens"]
    if method == "adaretake":
        return None, [visual + text] * layers
    if method == "dycoke":
        start = int(knobs.get("layer", 3))
        pruned = math.floor(visual * (1 - float(knobs.get("prune_ratio", 0.8))))
        return [visual + text] * layers, [visual + text if i < start else pruned + text for i in range(layers)]
    return [visual + text] * layers, [visual + text] * layers


def flops_row(cfg: DictConfig, method: str, knobs: dict, counts: dict, full_visual: int) -> dict:
    """FLOPs of the row and of the full-token model on the same input (TFLOPs, and their ratio)."""
    model, text = cfg.model, int(cfg.input.text_tokens)
    d, m, layers = int(model.hidden_size), int(model.intermediate_size), int(model.num_layers)
    prefill, decode = layer_profile(method, knobs, counts, text, layers)
    if prefill is None:
        chunks = counts["chunks"]
        ours = chunked_prefill(chunks["lengths"], chunks["kept"], text, d, m, layers) + decode_flops(decode, d, m)
    else:
        ours = flops_s3(prefill, decode, d, m)
    full = flops_s3([full_visual + text] * layers, [full_visual + text] * layers, d, m)
    return {"tflops": round(ours / 1e12, 3), "full_tflops": round(full / 1e12, 3), "ratio": round(ours / full, 4)}
