"""Block-local pruning: drop the lowest-energy tokens of each spatial block, evenly over blocks.

Fre-Res's Raw Anchor Branch keeps ``r`` tokens of an ``H x W`` anchor grid by partitioning it into
``b x b`` blocks and dropping the lowest-energy token(s) of each block (3x3 blocks on 24x24 keep
512 of 576: one drop per block), so no region disappears wholesale. ``keep_by_blocks`` does this
for any ``r`` and any grid: blocks at the edges may be partial; drops go one per block in rounds
(every block loses its weakest token before any block loses its second), and within a round the
blocks whose weakest token has the lowest energy go first. Batched, no loop over blocks.
"""

from __future__ import annotations

import torch

from .base import CompressionError


def block_index(h: int, w: int, block: int, device=None) -> torch.Tensor:
    """Block id of each grid cell: long [H, W], row-major over ``ceil(H/b) x ceil(W/b)`` blocks."""
    rows = torch.arange(h, device=device) // block
    cols = torch.arange(w, device=device) // block
    return rows[:, None] * ((w + block - 1) // block) + cols[None, :]


def keep_by_blocks(energy: torch.Tensor, keep: int, block: int = 3) -> torch.Tensor:
    """Bool mask [..., H, W] keeping exactly ``keep`` tokens per grid of ``energy`` [..., H, W]."""
    *lead, h, w = energy.shape
    if not 0 <= keep <= h * w:
        raise CompressionError(f"cannot keep {keep} tokens of a {h}x{w} grid")
    if block < 1:
        raise CompressionError(f"block size must be at least 1, got {block}")
    flat = energy.reshape(-1, h * w).float()
    blocks = block_index(h, w, block, energy.device).flatten()  # [HW]
    # rank of each token inside its block by energy (0 = weakest): sort by energy, then stably by block
    by_energy = flat.argsort(dim=1, stable=True)
    by_block = blocks[by_energy].argsort(dim=1, stable=True)
    order = by_energy.gather(1, by_block)  # tokens grouped by block, weakest first within a block
    sizes = torch.bincount(blocks)
    starts = torch.cumsum(sizes, 0) - sizes
    rank_sorted = torch.arange(h * w, device=energy.device) - starts[blocks[order]]
    rank = torch.empty_like(order).scatter_(1, order, rank_sorted)  # [N, HW]
    # drop order: by rank (round), then by energy; the first HW - keep are dropped
    first = flat.argsort(dim=1, stable=True)
    drop_order = first.gather(1, rank.gather(1, first).argsort(dim=1, stable=True))
    mask = torch.ones_like(flat, dtype=torch.bool)
    mask.scatter_(1, drop_order[:, : h * w - keep], False)
    return mask.reshape(*lead, h, w)
