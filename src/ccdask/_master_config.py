"""Configuration of the masters: how biases, darks and flats are combined and normalised."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._config_base import ConfigBase, option
from .combine._config import CombineConfig

__all__ = ["BiasConfig", "DarkConfig", "FlatConfig"]


@dataclass(frozen=True)
class BiasConfig(ConfigBase):
    """The bias master: overscan-corrected, trimmed, gain-applied biases, clipped and averaged.

    What the master holds is the residual 2-D structure the overscan cannot follow, in electrons.
    """

    enabled: bool = option(True, "build a bias master per chip and subtract it from every other frame")
    combine: CombineConfig = option(
        CombineConfig(method="mean", clip="sigma", sigma_lower=3.0, sigma_upper=3.0, maxiters=5),
        "how the biases are stacked (default: sigma-clipped mean)",
    )


@dataclass(frozen=True)
class DarkConfig(ConfigBase):
    """The dark master: a dark-current rate (e-/s) from bias-subtracted darks ÷ exposure time."""

    mode: Literal["scale", "nearest", "none"] = option(
        "scale",
        "scale: one rate master from all darks, times each frame's exposure time; nearest: the "
        "rate master of the darks whose exposure time is closest to the frame's (within "
        "`tolerance` for science frames; flats take the nearest, scaled), as the CCD reduction "
        "guide does; none: no dark correction",
    )
    tolerance: float = option(
        1.0, "nearest mode: largest allowed |dark exptime - frame exptime| in seconds",
        check=lambda v: v >= 0, why="must be zero or positive",
    )
    required: bool = option(
        False, "fail the plan when there are no darks (by default dark correction is then skipped)",
    )
    combine: CombineConfig = option(
        CombineConfig(method="mean", clip="sigma", sigma_lower=3.0, sigma_upper=3.0, maxiters=5),
        "how the dark rates are stacked",
    )


@dataclass(frozen=True)
class FlatConfig(ConfigBase):
    """Flat masters per filter, normalised over the whole focal plane.

    Each flat exposure (bias- and dark-corrected) is divided by one statistic — the median of a
    region of every chip, pooled over the focal plane — so chip-to-chip sensitivity survives;
    the normalised exposures are combined per chip, and the master is divided by the median of
    the same region pooled over all chips, so the focal plane has a median response of 1.
    """

    enabled: bool = option(True, "divide science frames by the flat master of their filter")
    region: str = option(
        "[*,*]",
        "FITS section of each trimmed chip used for the normalising medians (e.g. "
        "'[100:900,100:900]' to avoid vignetted edges); the medians are taken on a fixed grid of "
        "at most 2**18 pixels per chip (every s-th row and column), exact and chunk independent",
    )
    min_value: float = option(
        0.1, "flat values below this are replaced by it when dividing, and their pixels flagged bad",
        check=lambda v: v > 0, why="must be positive",
    )
    combine: CombineConfig = option(
        CombineConfig(method="mean", clip="sigma", sigma_lower=3.0, sigma_upper=3.0, maxiters=5),
        "how the normalised flats are stacked",
    )
    illumination: bool = option(
        False,
        "when a filter has both dome and twilight/sky flats (see `twilight_labels`), keep the dome "
        "master's pixel-to-pixel structure and take its large-scale shape from the twilight "
        "master: flat = dome x L(twilight / dome), L a least-squares 2-D Legendre polynomial "
        "fitted over the focal plane (DETSEC coordinates; per chip when a chip has no DETSEC), "
        "then renormalised to a focal-plane median of 1. Off: every flat of a filter, dome or "
        "twilight, is stacked into one master",
    )
    illumination_order: int = option(
        2, "illumination: total degree of the 2-D Legendre polynomial (terms P_i(x) P_j(y), i + j <= order)",
        check=lambda v: isinstance(v, int) and 0 <= v <= 10, why="must be an integer from 0 to 10",
    )
    illumination_sigma: float = option(
        3.0, "illumination: sample pixels whose residual exceeds this many sigma (MAD-based) are "
        "left out of the fit, iterated",
        check=lambda v: v > 0, why="must be positive",
    )
    illumination_maxiters: int = option(
        5, "illumination: at most this many clip-and-refit iterations (stops earlier when nothing changes)",
        check=lambda v: isinstance(v, int) and v >= 0, why="must be a non-negative integer",
    )
    twilight_labels: tuple[str, ...] = option(
        ("skyflat", "twilight", "twiflat", "twilightflat"),
        "catalogue labels of the flats that count as twilight/sky flats for `illumination` "
        "(the generic profile labels a flat by its normalised IMAGETYP value, e.g. 'skyflat', "
        "'domeflat', 'flat'; profile rules may set their own labels). Compared case-insensitively "
        "with spaces, dashes and underscores removed",
    )
