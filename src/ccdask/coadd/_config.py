"""The options of a coadd: resampling, rejection (the combine engine's), weights, scaling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from .. import dq as DQ
from ..combine import DEFAULT_MEMORY_PER_TASK, CombineConfig
from ..combine._config import parse_memory
from ..errors import ConfigError
from ..utils import ConfigBase, option
from ._reproject import ReprojectMethod

__all__ = ["DEFAULT_REJECT_BITS", "CoaddConfig", "CoaddScale", "CoaddWeights"]

CoaddWeights: TypeAlias = Literal["ivar", "none"]
CoaddScale: TypeAlias = Literal["none", "exposure"]

#: DQ bits whose pixels never enter a coadd: bad, saturated, cosmic ray, no data.
DEFAULT_REJECT_BITS = DQ.BAD | DQ.SATURATED | DQ.COSMIC | DQ.NODATA


def _memory(value: object) -> int:
    try:
        return parse_memory(value)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc


def _plain_rejection(cfg: CombineConfig) -> bool:
    return cfg.method == "mean" and cfg.scale is None and cfg.zero is None and cfg.weights is None


@dataclass(frozen=True)
class CoaddConfig(ConfigBase):
    """How reduced chips are resampled onto the footprint and stacked."""

    method: ReprojectMethod = option(
        "interp",
        "Resampling of each chip onto the footprint (the ``reproject`` package): ``interp`` "
        "(bilinear), ``adaptive`` (anti-aliased, DeForest 2004) or ``exact`` (flux-conserving overlap).",
    )
    reject: CombineConfig = option(
        CombineConfig(method="mean", clip="none"),
        "Rejection along the frame axis by the combine engine, after the noise clipping (its "
        "``clip`` and thresholds; ``method`` stays ``mean``, the weights and scale are the coadd's "
        "own). Default none: with the 2-6 frames a dithered field has per pixel, a spread measured "
        "from the values (MAD, std) either keeps a cosmic ray among three values or rejects good ones.",
        check=_plain_rejection,
        why="the rejection config must keep method='mean' and no scale, zero or weights",
    )
    noise_sigma: float | None = option(
        4.0,
        "Reject values more than this many times their own sqrt(VAR) above the median of the pixel's "
        "survivors, iterated (IRAF ccdclip's idea with the VAR plane as noise model); None: off.",
        check=lambda v: v > 0,
        why="must be > 0",
    )
    noise_sigma_lower: float | None = option(
        4.0, "The same below the median (None: ``noise_sigma``).", check=lambda v: v > 0, why="must be > 0"
    )
    weights: CoaddWeights = option(
        "ivar", "Weights of the survivors: ``ivar`` (inverse variance, per pixel) or ``none`` (plain mean)."
    )
    scale: CoaddScale = option(
        "none",
        "Per-exposure flux scale: ``none`` or ``exposure`` (each frame times mean(EXPTIME) / its "
        "EXPTIME, so the coadd is in electrons per mean exposure).",
    )
    reject_bits: int = option(
        DEFAULT_REJECT_BITS,
        "DQ bits whose pixels are left out before resampling (default bad | saturated | cosmic | no data).",
        check=lambda v: 0 <= v < 2**16,
        why="must be a 16-bit mask",
    )
    memory_per_task: int = option(
        DEFAULT_MEMORY_PER_TASK,
        "Budget in bytes for one tile task (the resampled planes of every chip it covers).",
        parse=_memory,
    )
