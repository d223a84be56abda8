"""Robust statistics shared by every step: the MAD-to-sigma factor and fixed sample grids."""

from __future__ import annotations

import math

__all__ = ["MAD_TO_SIGMA", "SAMPLE_PIXELS", "sample_step"]

#: Standard deviation of a normal distribution per unit of median absolute deviation,
#: 1 / Φ⁻¹(3/4) (what ``astropy.stats.mad_std`` multiplies by).
MAD_TO_SIGMA = 1.482602218505602

SAMPLE_PIXELS = 1 << 18
"""Pixels per chip (at most) of the fixed grid the focal-plane medians are taken on."""


def sample_step(shape: tuple[int, int]) -> int:
    """Stride of the fixed sample grid ``image[::s, ::s]`` (at most 2**18 pixels per chip)."""
    return max(1, math.ceil(math.sqrt(shape[0] * shape[1] / SAMPLE_PIXELS)))
