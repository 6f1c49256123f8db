"""Temporal DCT energy spectrum of latent residuals (the Fre-Res paper's Figure 1 analysis).

A clip's latent frames ``[T, H, W, D]``, minus its first frame (the I-frame of one group of
pictures), transformed by the orthonormal type-II DCT along time: the energy of coefficient ``k``
is the sum of its squares over every token and channel. Orthonormality makes the energies add up
to the residuals' total energy, so ``low_frequency_share(spectrum, 5)`` is the share of the
residual energy in the first five coefficients.
"""

from __future__ import annotations

import torch

from .dct import dct


def residual_spectrum(features: torch.Tensor) -> torch.Tensor:
    """Energy per temporal DCT coefficient [T] of ``features`` [T, H, W, D] minus its first frame."""
    if features.ndim != 4:
        raise ValueError(f"features must be [T, H, W, D], got shape {tuple(features.shape)}")
    x = features.float().flatten(1, 2)
    return dct(x - x[:1], dim=0).pow(2).sum(dim=(1, 2))


def low_frequency_share(spectrum: torch.Tensor, first: int = 5) -> float:
    """Share (0-1) of the spectrum's energy in its first ``first`` coefficients (1.0 for a still clip)."""
    total = float(spectrum.sum())
    return float(spectrum[:first].sum()) / total if total > 0 else 1.0
