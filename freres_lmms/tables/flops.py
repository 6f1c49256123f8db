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

``supplement_rows`` applies S3 to every row of the supplement's own tables (most of their methods
are not implemented here: the formula needs only each row's token profile), from the retention
the row states: ``x%`` of the full visual tokens in every layer, or ``x%/y%`` with ``y%`` from the
method's pruning layer on (FastV, HoliTom and the supplement's own inner stage).
"""

from __future__ import annotations

import math

from omegaconf import DictConfig

from ..config import compose, experiment_presets, input_grid, input_size, prompt_tokens
from ..tokens import resolve

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
    model, text = cfg.model, prompt_tokens(cfg)
    d, m, layers = int(model.hidden_size), int(model.intermediate_size), int(model.num_layers)
    prefill, decode = layer_profile(method, knobs, counts, text, layers)
    if prefill is None:
        chunks = counts["chunks"]
        ours = chunked_prefill(chunks["lengths"], chunks["kept"], text, d, m, layers) + decode_flops(decode, d, m)
    else:
        ours = flops_s3(prefill, decode, d, m)
    full = flops_s3([full_visual + text] * layers, [full_visual + text] * layers, d, m)
    return {"tflops": round(ours / 1e12, 3), "full_tflops": round(full / 1e12, 3), "ratio": round(ours / full, 4)}


# -- the supplement's own rows: S3 on each row's stated retention ------------------------------------
def parse_retention(text: str) -> tuple[float, float | None]:
    """``"2%"`` -> (0.02, None); ``"15%/7.5%"`` -> (0.15, 0.075): the share before the LLM and, after a
    slash, the share left from the method's pruning layer on (FastV's ``100%/x``, HoliTom's and the
    supplement's ``x/(x/2)``)."""
    parts = [p.strip() for p in str(text).split("/")]
    try:
        shares = [float(p.rstrip("%")) / 100 for p in parts if p.endswith("%")]
    except ValueError:
        shares = []
    if len(shares) != len(parts) or not 1 <= len(shares) <= 2 or not all(0 < s <= 1 for s in shares):
        raise ValueError(f"retention {text!r}: expected 'x%' or 'x%/y%' with shares in (0, 100]")
    return shares[0], (shares[1] if len(shares) == 2 else None)


def retention_profile(full: int, layers: int, outer: float, inner: float | None, inner_layer: int | None) -> list[int]:
    """Visual tokens per layer: ``round(full * outer)`` in every layer, or from ``inner_layer`` on
    ``round(full * inner)`` (the pruned tokens leave the KV cache too, so decoding reads the same)."""
    before = round(full * outer)
    if inner is None:
        return [before] * layers
    if inner_layer is None or not 0 <= inner_layer < layers:
        raise ValueError(f"a two-part retention needs a pruning layer in [0, {layers}), got {inner_layer}")
    return [before] * inner_layer + [round(full * inner)] * (layers - inner_layer)


def backbone_numbers(backbone) -> dict:
    """``{d, m, layers, tokens_per_frame, frames}`` of a ``spec.Backbone``."""
    if backbone.experiment:  # the full-token count is the preset's grid: no method to run
        cfg = compose([f"experiment={backbone.experiment}"])
        model, frames = cfg.model, input_size(cfg)[0]
        return {"d": int(model.hidden_size), "m": int(model.intermediate_size), "layers": int(model.num_layers),
                "tokens_per_frame": math.prod(input_grid(cfg)) / frames, "frames": frames}
    return {"d": backbone.hidden_size, "m": backbone.intermediate_size, "layers": backbone.num_layers,
            "tokens_per_frame": backbone.tokens_per_frame, "frames": backbone.frames}


def _stated(reference: dict, column: str | None):
    value = reference.get(column) if column else None
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def supplement_rows(rows, reference_tables: dict) -> list[dict]:
    """S3 for every row of the supplement's tables (``rows``: a ``spec.RetentionRows``), from each
    row's stated retention, frames and pruning layer, against the full model on the same frames;
    also over visual tokens alone (no text), the count the supplement's ratios refer to."""
    numbers = {name: backbone_numbers(b) for name, b in rows.backbones.items()}
    out = []
    for table in rows.tables:
        for reference in reference_tables[table].to_dict("records"):
            where = f"{table}/{reference['row']}"
            if reference["backbone"] not in numbers:
                raise ValueError(f"{where}: no architecture for backbone {reference['backbone']!r} in the flops spec")
            arch = numbers[reference["backbone"]]
            stated = next((reference[c] for c in rows.retention_columns if _stated(reference, c) is not None), None)
            retention = "100%" if reference["method"] == "full" else stated or rows.retention.get(table)
            if retention is None:
                raise ValueError(f"{where}: states no retention and the flops spec gives none for {table}")
            outer, inner = parse_retention(retention)
            frames = int(_stated(reference, rows.frames_column) or arch["frames"])
            layer = _stated(reference, rows.layer_column)
            layer = int(layer) if layer is not None else rows.pruning_layer.get(reference["method"])
            full = round(arch["tokens_per_frame"] * frames)
            visual = retention_profile(full, arch["layers"], outer, inner, layer)
            d, m, text, dense = arch["d"], arch["m"], rows.text_tokens, [full] * arch["layers"]
            ours, baseline = (flops_s3(n, n, d, m) for n in ([v + text for v in visual], [v + text for v in dense]))
            visual_only = flops_s3(visual, visual, d, m) / flops_s3(dense, dense, d, m)
            out.append({"table": table, "row": reference["row"], "label": reference["label"],
                        "backbone": reference["backbone"], "method": reference["method"], "retention": retention,
                        "frames": frames, "pruning layer": layer if inner is not None else None,
                        "full visual tokens": full, "visual tokens (first layer)": visual[0],
                        "visual tokens (last layer)": visual[-1], "TFLOPs (eq. S3)": round(ours / 1e12, 3),
                        "full-token TFLOPs": round(baseline / 1e12, 3), "% of full": round(100 * ours / baseline, 2),
                        "% of full, visual tokens only": round(100 * visual_only, 2),
                        "% of full (paper)": rows.paper.get(where)})
    return out


def preset_rows(overrides: list[str]) -> list[dict]:
    """Equation S3 for every experiment preset, with the counts of ``tokens.resolve`` (no model)."""
    rows = []
    for preset in experiment_presets():
        resolved = resolve(compose([f"experiment={preset}", *overrides]))
        flops = flops_row(resolved.cfg, resolved.method, resolved.knobs, resolved.counts, resolved.full_tokens)
        rows.append({"experiment": preset, "model": resolved.cfg.model.name, "method": resolved.method,
                     "visual tokens": resolved.counts["visual_tokens"], "kind": resolved.counts["kind"],
                     "full visual tokens": resolved.full_tokens, "text tokens": prompt_tokens(resolved.cfg),
                     "TFLOPs (eq. S3)": flops["tflops"], "full-token TFLOPs": flops["full_tflops"],
                     "ratio to full": flops["ratio"]})
    return rows
