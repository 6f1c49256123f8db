"""Orthonormal DCT-II along tensor dimensions, as batched matrix products (fp32).

Shared by the frequency methods: Fre-Res (temporal 1D-DCT of latent residuals) and Fourier-VLM
(2D-DCT of each frame's token grid, inverse at a smaller size). ``dct(x, dim)`` equals
``scipy.fft.dct(x, type=2, norm="ortho", axis=dim)`` and ``idct`` its inverse (tested).
The basis is a cached ``N x N`` matrix, so one call transforms every row of a batch at once.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


@lru_cache(maxsize=64)
def _basis(n: int, device: torch.device) -> torch.Tensor:
    """C[k, i] = s_k sqrt(2/n) cos(pi (2i + 1) k / 2n), s_0 = 1/sqrt(2): orthonormal, C^-1 = C^T."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    basis = math.sqrt(2.0 / n) * torch.cos(math.pi * (2 * i + 1) * k / (2 * n))
    basis[0] /= math.sqrt(2.0)
    return basis.to(device=device, dtype=torch.float32)


def dct_basis(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The ``n x n`` orthonormal DCT-II matrix (rows are frequencies), fp32 on ``device``."""
    if n < 1:
        raise ValueError(f"DCT length must be at least 1, got {n}")
    return _basis(n, torch.device(device))


def dct(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Orthonormal DCT-II of ``x`` along ``dim`` (computed in fp32, returned in fp32)."""
    basis = dct_basis(x.shape[dim], x.device)
    return torch.movedim(torch.movedim(x.float(), dim, -1) @ basis.T, -1, dim)


def idct(coefficients: torch.Tensor, dim: int = -1, size: int | None = None) -> torch.Tensor:
    """Inverse of ``dct`` along ``dim``. With ``size`` larger than the coefficients given, the
    missing (higher) frequencies count as zero: the low-pass reconstruction at length ``size``."""
    kept = coefficients.shape[dim]
    n = kept if size is None else size
    if kept > n:
        raise ValueError(f"{kept} coefficients do not fit a length-{n} inverse DCT")
    basis = dct_basis(n, coefficients.device)[:kept]  # [kept, n]
    return torch.movedim(torch.movedim(coefficients.float(), dim, -1) @ basis, -1, dim)


def dct2(x: torch.Tensor, dims: tuple[int, int] = (-2, -1)) -> torch.Tensor:
    """Orthonormal 2D DCT-II over two dimensions."""
    return dct(dct(x, dims[0]), dims[1])


def idct2(coefficients: torch.Tensor, dims: tuple[int, int] = (-2, -1)) -> torch.Tensor:
    """Inverse of ``dct2`` at the coefficients' own size (a cropped block gives a smaller grid)."""
    return idct(idct(coefficients, dims[0]), dims[1])
