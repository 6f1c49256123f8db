"""Prefill in chunks on the stock model: bounded activations, logits of the last position only.

``generate`` prefills the whole prompt in one forward: the MLP's intermediate activations of a
46,102-token prompt alone take 3 x 1.1 GB on Qwen3-VL-8B. :func:`chunked_prefill` calls the stock
model on consecutive pieces of the compressed prompt with one ``DynamicCache`` (each piece with its
own rows of the video features and DeepStack rows, so the model's placeholder check holds per
piece), asks for the last position's logits only (``logits_to_keep=1``), and can pick SDPA's
kernel (:func:`sdpa_backends`, scoped to the call). A piece after the first attends to the cache
through ``models.attention.piece_attention_forward`` (two fused-kernel calls merged exactly, no
mask), switched on for the text model only for the call. With ``release=True`` the prefill takes
the video features out of the kwargs and frees each piece's rows once it is in the cache, so the
features and the KV cache are not both held whole. :func:`greedy_decode` continues from the cache,
each position row one past the prompt's last id, as ``generate`` does.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from functools import partial

import torch
from transformers import DynamicCache

from .attention import KERNELS, piece_attention_forward

PIECE_ATTENTION = "freres_pieces"

#: SDPA kernels by name, in the priority order ``sdpa_backends`` gives them
BACKENDS = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "math": "MATH"}


@contextmanager
def sdpa_backends(first: str | None):
    """PyTorch's SDPA tries ``first`` before its other kernels inside the block (None: its own order).

    ``torch.nn.attention.sdpa_kernel`` with ``set_priority``: scoped, restored on exit."""
    if first is None:
        yield
        return
    if first not in BACKENDS:
        raise ValueError(f"unknown SDPA backend {first!r}; known: {', '.join(BACKENDS)}")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [first] + [name for name in BACKENDS if name != first]
    with sdpa_kernel([getattr(SDPBackend, BACKENDS[name]) for name in order], set_priority=True):
        yield


def _piece(encoded, start: int, stop: int, copy: bool = False):
    """Rows ``[start, stop)`` of a one-video encoder output (features and DeepStack rows); ``copy``:
    their own storage, so the whole tensors can be freed."""
    take = (lambda x: x[start:stop].clone()) if copy else (lambda x: x[start:stop])
    fields = {"pooler_output": (take(encoded.pooler_output[0]),)}
    deepstack = getattr(encoded, "deepstack_features", None)
    if deepstack:
        fields["deepstack_features"] = [(take(layer[0]),) for layer in deepstack]
    return type(encoded)(**fields)


@torch.no_grad()
def chunked_prefill(model, kwargs: dict, chunk_tokens: int = 8192, backend: str | None = None,
                    video_token_id: int | None = None, release: bool = False) -> tuple[torch.Tensor, DynamicCache]:
    """Prefill ``compress_inputs``' kwargs (one sample, one video) in pieces of ``chunk_tokens``.

    Returns the last position's logits ``[1, V]`` (fp32) and the filled cache. ``release``: take
    ``mm_encoder_outputs`` out of ``kwargs`` and drop each piece's feature rows after its forward.
    """
    from .stages import scoped_attention

    input_ids = kwargs["input_ids"]
    if input_ids.shape[0] != 1:
        raise ValueError(f"chunked_prefill runs one sample at a time, got a batch of {input_ids.shape[0]}")
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
    mask = kwargs.get("attention_mask")
    if mask is not None and not bool(mask.all()):
        raise ValueError("chunked_prefill takes an unpadded prompt")
    encoded = (kwargs.get("mm_encoder_outputs") or {}).get("video")
    if encoded is not None and len(encoded.pooler_output) != 1:
        raise ValueError("chunked_prefill takes one video per prompt")
    video_token_id = model.config.video_token_id if video_token_id is None else video_token_id
    length = input_ids.shape[1]
    bounds = list(range(0, length, chunk_tokens)) + [length]
    # each piece's rows of the video features: the video tokens before its end
    ends = torch.cumsum((input_ids[0] == video_token_id).long(), 0)[torch.tensor(bounds[1:], device=input_ids.device) - 1]
    rows = [0] + ends.tolist()
    pieces = [None if hi == lo else (lo, hi) for lo, hi in zip(rows[:-1], rows[1:])]
    if encoded is not None and release:
        kwargs.pop("mm_encoder_outputs")
        pieces = [None if p is None else _piece(encoded, *p, copy=True) for p in pieces]
        del encoded
    elif encoded is not None:
        pieces = [None if p is None else _piece(encoded, *p) for p in pieces]
    cache = DynamicCache(config=model.config.get_text_config())
    kernel = backend if backend in KERNELS else "flash"
    attention = scoped_attention(model.model.language_model, PIECE_ATTENTION,
                                 partial(piece_attention_forward, kernel=kernel)) if len(pieces) > 1 else nullcontext()
    logits = None
    with sdpa_backends(backend), attention:
        for index, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            piece = {"input_ids": input_ids[:, lo:hi], "position_ids": kwargs["position_ids"][:, :, lo:hi],
                     "mm_token_type_ids": kwargs["mm_token_type_ids"][:, lo:hi]}
            if pieces[index] is not None:
                piece["mm_encoder_outputs"] = {"video": pieces[index]}
                pieces[index] = None  # with release, the rows go once the forward is done
            out = model(**piece, past_key_values=cache, use_cache=True, logits_to_keep=1)
            logits = out.logits[:, -1].float()
            del out, piece
    return logits, cache


@torch.no_grad()
def greedy_decode(model, cache: DynamicCache, logits: torch.Tensor, last_position: torch.Tensor, steps: int,
                  backend: str | None = None) -> torch.Tensor:
    """``steps`` greedy tokens from the prefill's ``logits [1, V]``; ``last_position [4, 1, 1]`` is
    the prompt's last position ids (each row continues by one per token). Returns ``[1, steps]``."""
    tokens = []
    token = logits.argmax(-1, keepdim=True)  # [1, 1]
    with sdpa_backends(backend):
        for step in range(steps):
            tokens.append(token)
            if step + 1 == steps:
                break
            out = model(input_ids=token, position_ids=last_position + 1 + step, past_key_values=cache, use_cache=True,
                        logits_to_keep=1)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
    return torch.cat(tokens, 1)
