"""Attention of a piece of queries that follows cached keys, without a mask, at a fused kernel's speed.

A prefill in pieces (``models.prefill``) and AdaReTaKe's chunk forwards have ``q`` queries after
``kv - q`` cached keys: bottom-right causal attention. PyTorch's SDPA takes it only with a
materialized mask, which rules out its fast kernels (on the H200: 3.85 s for a 46K-token prefill in
pieces of 8,192 against 2.35 s in one forward, results/table3.md). Split exactly instead: the
queries against the cached keys (no mask) and against their own keys (square causal), each one
fused-kernel call that also returns its log-sum-exp, merged by
``out = sum_i out_i * exp(lse_i - logaddexp(lse_1, lse_2))`` -- the softmax over all keys, as
flash attention combines its blocks.

Kernels: cuDNN's or flash's SDPA op on CUDA (their public wrapper does not return the log-sum-exp),
flash's CPU op on the CPU (tests). cuDNN builds an execution plan per new shape, so callers whose
shapes change every call (AdaReTaKe's per-layer cache lengths) pass ``kernel="flash"``.
"""

from __future__ import annotations

import torch

KERNELS = ("cudnn", "flash")
#: kernels that failed here and were replaced by flash's op (reported by the profile)
FALLBACKS: dict[str, str] = {}


def attention_with_lse(query, key, value, causal: bool, scale: float | None, kernel: str = "flash"):
    """``(out [B, H, q, d], lse [B, H, q] fp32)``; heads of ``key``/``value`` equal ``query``'s."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    if query.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, 0.0, causal, scale=scale)[:2]
    elif kernel == "cudnn" and "cudnn" not in FALLBACKS:
        try:
            out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(query, key, value, None, True, 0.0, causal,
                                                                           False, scale=scale)[:2]
        except RuntimeError as err:  # a build or GPU without it: flash's op gives the same result
            FALLBACKS["cudnn"] = str(err).splitlines()[0][:200]
            return attention_with_lse(query, key, value, causal, scale, "flash")
    else:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, 0.0, causal, False, scale=scale)[:2]
    return out, lse.reshape(query.shape[:3]).float()


def repeat_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """Grouped-query K/V ``[B, h_kv, L, d]`` -> ``[B, heads, L, d]`` (each KV head serves ``heads / h_kv`` queries)."""
    groups = heads // x.shape[1]
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def prefix_causal_attention(query, key, value, scale: float | None = None, kernel: str = "flash") -> torch.Tensor:
    """Softmax attention of ``query [B, H, q, d]`` over ``key``/``value [B, h_kv, kv, d]`` where the
    queries are the last ``q`` positions: every earlier key visible, causal among the last ``q``.
    Returns ``[B, H, q, d]`` in the query's dtype."""
    batch, heads, q_len, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    if q_len > kv_len:
        raise ValueError(f"{q_len} queries cannot follow {kv_len} keys")
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads cannot share {kv_heads} key/value heads")
    past = kv_len - q_len
    # the piece's own keys: causal, so each query head needs its KV head's rows (the piece's only)
    own, own_lse = attention_with_lse(query, repeat_heads(key[:, :, past:], heads),
                                      repeat_heads(value[:, :, past:], heads), True, scale, kernel)
    if past == 0:
        return own
    # the cached keys: no mask, so the query heads that share a KV head are one longer query of it;
    # the cache is read as it is, never repeated per query head
    grouped = query.reshape(batch, kv_heads, (heads // kv_heads) * q_len, dim)
    seen, seen_lse = attention_with_lse(grouped, key[:, :, :past], value[:, :, :past], False, scale, kernel)
    seen, seen_lse = seen.reshape(batch, heads, q_len, dim), seen_lse.reshape(batch, heads, q_len)
    total = torch.logaddexp(seen_lse, own_lse)
    out = seen.float() * torch.exp(seen_lse - total)[..., None]
    out += own.float() * torch.exp(own_lse - total)[..., None]
    return out.to(query.dtype)


def piece_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                            kernel: str = "cudnn", **kwargs):
    """An attention function for ``transformers.AttentionInterface`` (one unpadded sample): the square
    first piece and single-token decode steps go to SDPA as usual, a later piece to
    :func:`prefix_causal_attention`. Returns ``([B, q, H, d], None)`` like the stock functions."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q_len, kv_len = query.shape[2], key.shape[2]
    if q_len == 1 or q_len == kv_len:
        return sdpa_attention_forward(module, query, key, value, None, dropout=dropout, scaling=scaling, **kwargs)
    out = prefix_causal_attention(query, key, value, scaling, kernel)
    return out.transpose(1, 2).contiguous(), None
