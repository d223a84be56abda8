"""The options of a combine, as one frozen, validated, serialisable dataclass."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from ..errors import ConfigError

__all__ = [
    "DEFAULT_MEMORY_PER_TASK",
    "MAX_FRAMES",
    "Center",
    "Clip",
    "CombineConfig",
    "Method",
    "ScaleMode",
    "Spread",
    "parse_memory",
]

Method = Literal["mean", "median", "sum"]
Clip = Literal["sigma", "minmax", "extrema", "none"]
Center = Literal["median", "mean"]
Spread = Literal["mad_std", "std"]
ScaleMode = Literal["median", "mean", "exposure"]

METHODS = ("mean", "median", "sum")
CLIPS = ("sigma", "minmax", "extrema", "none")
CENTERS = ("median", "mean")
SPREADS = ("mad_std", "std")
SCALE_MODES = ("median", "mean", "exposure")

#: Default per-task memory budget in bytes (64 MiB).
DEFAULT_MEMORY_PER_TASK = 64 * 2**20
#: The survivor count is stored as int16.
MAX_FRAMES = 32767


def parse_memory(value: int | float | str | None) -> int:
    """A memory budget in bytes from an int/float (bytes) or a string such as ``"64 MiB"``.

    ``None`` gives :data:`DEFAULT_MEMORY_PER_TASK`.
    """
    if value is None:
        return DEFAULT_MEMORY_PER_TASK
    if isinstance(value, str):
        from dask.utils import parse_bytes

        try:
            nbytes = parse_bytes(value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"memory_per_task: cannot parse {value!r} as a size") from exc
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"memory_per_task must be bytes or a size string, not {value!r}")
    else:
        if not math.isfinite(value):
            raise ConfigError(f"memory_per_task must be finite, not {value!r}")
        nbytes = int(value)
    if nbytes < 2**20:
        raise ConfigError(f"memory_per_task must be at least 1 MiB, not {nbytes} bytes")
    return nbytes


def _float_tuple(name: str, value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a sequence of numbers, one per frame") from exc
    if not all(math.isfinite(v) for v in out):
        raise ConfigError(f"{name} must be finite numbers, got {out}")
    return out


def _choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _number(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, not {value!r}")
    if math.isnan(value):
        raise ConfigError(f"{name} must not be NaN")
    return float(value)


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class CombineConfig:
    """How a stack of frames is clipped and combined along the frame axis.

    Every field is validated on construction (:class:`ccdask.errors.ConfigError`, also a
    ``ValueError``); :meth:`to_dict` / :meth:`from_dict` round-trip through plain JSON types.
    """

    method: Method = "mean"
    """Statistic of the survivors: ``mean`` (weighted if ``weights``), ``median`` or ``sum``."""
    clip: Clip = "sigma"
    """Rejection: ``sigma`` (iterative, as ``astropy.stats.sigma_clip``), ``minmax`` (absolute
    thresholds ``min_clip``/``max_clip``), ``extrema`` (drop the ``nlow`` lowest and ``nhigh``
    highest values per pixel) or ``none``."""
    sigma_lower: float = 3.0
    """Lower threshold of sigma clipping, in units of the spread."""
    sigma_upper: float = 3.0
    """Upper threshold of sigma clipping, in units of the spread."""
    maxiters: int | None = 5
    """Maximum sigma-clipping iterations (``None``: until nothing changes)."""
    center: Center = "median"
    """Center of sigma clipping: ``median`` or ``mean``."""
    spread: Spread = "mad_std"
    """Spread of sigma clipping: ``mad_std`` (1.4826 × MAD) or ``std`` (population std)."""
    nlow: int = 1
    """Extrema clipping: number of lowest values rejected per pixel."""
    nhigh: int = 1
    """Extrema clipping: number of highest values rejected per pixel."""
    min_clip: float | None = None
    """Values below this (in input units, before scaling) are rejected; any clip mode."""
    max_clip: float | None = None
    """Values above this (in input units, before scaling) are rejected; any clip mode."""
    nkeep: int = 1
    """Sigma clipping keeps at least this many survivors where there are that many finite values
    (the last iteration whose bounds keep enough is used; 0 reproduces astropy exactly)."""
    scale: ScaleMode | tuple[float, ...] | None = None
    """Per-frame multiplicative scale: factors, or ``median``/``mean``/``exposure`` to normalise
    each frame to the average level of the stack."""
    zero: tuple[float, ...] | None = None
    """Per-frame additive offsets, applied after scaling: ``value * scale + zero``."""
    weights: tuple[float, ...] | None = None
    """Per-frame weights of the mean (or the sum)."""
    memory_per_task: int = DEFAULT_MEMORY_PER_TASK
    """Budget in bytes for one task (its input block, scratch and outputs)."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        _choice("method", self.method, METHODS)
        _choice("clip", self.clip, CLIPS)
        _choice("center", self.center, CENTERS)
        _choice("spread", self.spread, SPREADS)
        for name in ("sigma_lower", "sigma_upper"):
            v = _number(name, getattr(self, name))
            if v < 0:
                raise ConfigError(f"{name} must be >= 0, not {v}")
            set_(self, name, v)
        if self.maxiters is not None:
            set_(self, "maxiters", _int("maxiters", self.maxiters, 1))
        set_(self, "nlow", _int("nlow", self.nlow, 0))
        set_(self, "nhigh", _int("nhigh", self.nhigh, 0))
        set_(self, "nkeep", _int("nkeep", self.nkeep, 0))
        set_(self, "min_clip", _number("min_clip", self.min_clip, allow_none=True))
        set_(self, "max_clip", _number("max_clip", self.max_clip, allow_none=True))
        if self.clip == "minmax" and self.min_clip is None and self.max_clip is None:
            raise ConfigError("clip='minmax' needs min_clip and/or max_clip")
        if (self.min_clip is not None and self.max_clip is not None
                and self.min_clip > self.max_clip):
            raise ConfigError(f"min_clip {self.min_clip} is above max_clip {self.max_clip}")
        if isinstance(self.scale, str) or self.scale is None:
            if self.scale is not None:
                _choice("scale", self.scale, SCALE_MODES)
        else:
            s = _float_tuple("scale", self.scale)
            if any(v == 0 for v in s):
                raise ConfigError("scale factors must be non-zero")
            set_(self, "scale", s)
        set_(self, "zero", _float_tuple("zero", self.zero))
        w = _float_tuple("weights", self.weights)
        if w is not None:
            if any(v < 0 for v in w) or not any(v > 0 for v in w):
                raise ConfigError("weights must be >= 0 with at least one > 0")
            if self.method == "median":
                raise ConfigError("weights apply to method 'mean' or 'sum', not 'median'")
        set_(self, "weights", w)
        set_(self, "memory_per_task", parse_memory(self.memory_per_task))
        lengths = {name: len(v) for name in ("scale", "zero", "weights")
                   if isinstance(v := getattr(self, name), tuple)}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"per-frame sequences differ in length: {lengths}")

    # -- derived -------------------------------------------------------------------------
    def check_frames(self, nframes: int) -> None:
        """Raise :class:`ConfigError` unless the per-frame options fit ``nframes`` frames."""
        if nframes < 1:
            raise ConfigError("combine needs at least one frame")
        if nframes > MAX_FRAMES:
            raise ConfigError(f"combine takes at most {MAX_FRAMES} frames, got {nframes}")
        for name in ("scale", "zero", "weights"):
            v = getattr(self, name)
            if isinstance(v, tuple) and len(v) != nframes:
                raise ConfigError(f"{name} has {len(v)} values for {nframes} frames")

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> CombineConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = set(doc) - known
        if unknown:
            raise ConfigError(f"unknown combine option(s): {', '.join(sorted(unknown))}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in doc.items()}
        return cls(**kw)
