"""Frozen, validated configuration of the arithmetic calibration steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..utils._options import ConfigBase, option

__all__ = ["OverscanConfig", "OverscanMethod", "OverscanModel"]

OverscanMethod = Literal["median", "mean", "clipped_mean"]
OverscanModel = Literal["none", "polynomial", "legendre", "spline"]


@dataclass(frozen=True)
class OverscanConfig(ConfigBase):
    """How each amplifier's overscan is collapsed, smoothed and subtracted.

    The overscan of an amplifier is its ``biassec``. It is first cut down by ``skip_start`` and
    ``skip_end``, then collapsed across the overscan into one value per *line*: per raw row for a
    serial overscan (columns beside the data), per raw column for a parallel overscan (rows above
    or below the data). The collapsed profile is then optionally smoothed along the lines by a
    least-squares ``model``, and the result is subtracted from the amplifier's data pixels.

    Skip convention
    ---------------
    ``skip_start`` and ``skip_end`` count overscan columns (serial) or rows (parallel) *away from
    the data*: ``skip_start`` drops the ones nearest the data section (read right after the data,
    they carry residual charge), ``skip_end`` the ones farthest from it. The direction comes from
    the geometry, not from the section's index order, so an overscan on the left of the data
    (lower column numbers, e.g. SAAO ``BIASSEC=[4:13,...]`` left of ``[17:528,...]``) drops its
    *highest* columns first. Example: the LFC chip of the reference lecture has
    ``BIASSEC=[2049:2080,...]`` to the right of the data; ``skip_start=6`` keeps columns 2055-2080,
    the region the lecture finds usable.
    """

    enabled: bool = option(
        True,
        "subtract the overscan; when false `subtract_overscan` returns the raw pixels as float32 "
        "(the overscan can still be measured with `overscan_stats`)",
    )
    method: OverscanMethod = option(
        "median",
        "how the overscan is collapsed across, per line: median, mean, or clipped_mean (mean "
        "after iterative clipping at clip_sigma standard deviations about the median)",
    )
    clip_sigma: float = option(
        3.0,
        "clipping threshold in standard deviations for clipped_mean",
        check=lambda v: v > 0,
        why="must be positive",
    )
    clip_iters: int = option(
        5,
        "maximum clipping iterations for clipped_mean (stops earlier when nothing changes)",
        check=lambda v: v >= 1,
        why="must be at least 1",
    )
    skip_start: int = option(
        0,
        "overscan columns (serial) / rows (parallel) to ignore next to the data",
        check=lambda v: v >= 0,
        why="must be zero or positive",
    )
    skip_end: int = option(
        0,
        "overscan columns (serial) / rows (parallel) to ignore at the far end from the data",
        check=lambda v: v >= 0,
        why="must be zero or positive",
    )
    model: OverscanModel = option(
        "none",
        "smoothing of the collapsed overscan along the readout direction: none (use the "
        "collapsed values), polynomial or legendre (least-squares fit of degree `order`; the two "
        "span the same functions and give the same fit, Legendre being the better conditioned "
        "basis), or spline (least-squares cubic spline with `knots` evenly spaced interior knots)",
    )
    order: int = option(
        1,
        "degree of the polynomial/legendre model",
        check=lambda v: 0 <= v <= 30,
        why="must be between 0 and 30",
    )
    knots: int = option(
        3,
        "number of interior knots of the cubic spline model (0: one cubic)",
        check=lambda v: v >= 0,
        why="must be zero or positive",
    )
