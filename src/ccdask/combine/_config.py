"""The options of a combine, as one frozen, validated, serialisable config.

:class:`CombineConfig` is built on the options system of every ccdask configuration
(:mod:`ccdask.utils._options`): each field is an ``option`` with its documentation, its choices
are its ``Literal`` type (:data:`Method`, :data:`Clip`, ...), and a ``parse`` function
normalises what needs it (numbers to float, per-frame sequences to tuples of float, memory sizes
to bytes). The checks that involve several fields are in ``__post_init__``.
"""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigError
from ..utils._options import ConfigBase, option

__all__ = [
    "DEFAULT_DQ_BAD",
    "DEFAULT_MEMORY_PER_TASK",
    "IRAF_CLIPS",
    "MAX_FRAMES",
    "SIRIL_CLIPS",
    "Center",
    "Clip",
    "CombineConfig",
    "Method",
    "Normalize",
    "ScaleMode",
    "Spread",
    "WeightMode",
    "ZeroMode",
    "parse_memory",
    "parse_statsec",
]

Method = Literal["mean", "median", "sum"]
Clip = Literal[
    "sigma",
    "sigclip",
    "avsigclip",
    "ccdclip",
    "crreject",
    "pclip",
    "minmax",
    "extrema",
    "winsorized",
    "linearfit",
    "gesd",
    "varclip",
    "none",
]
Center = Literal["median", "mean"]
Spread = Literal["mad_std", "std"]
ScaleMode = Literal["median", "mean", "mode", "exposure"]
ZeroMode = Literal["median", "mean", "mode"]
WeightMode = Literal["exposure", "ivar", "noise"]
Normalize = Literal["mean", "first"]

#: The rejection kinds with IRAF imcombine's rules (``nkeep`` sign meaning, ``mclip``).
IRAF_CLIPS = ("sigclip", "avsigclip", "ccdclip", "crreject", "pclip")
#: The rejection kinds as Siril defines them (:mod:`ccdask.combine._siril`).
SIRIL_CLIPS = ("winsorized", "linearfit", "gesd")

#: The DQ bits that make an input value bad by default: bad pixel, saturated, cosmic ray, no data
#: and bleed trail (not "interpolated": an interpolated value is used). See :mod:`ccdask.dq`.
DEFAULT_DQ_BAD = 1 | 2 | 4 | 8 | 32

#: Default per-task memory budget in bytes (64 MiB).
DEFAULT_MEMORY_PER_TASK = 64 * 2**20
#: The survivor count is stored as int16.
MAX_FRAMES = 32767


def _memory_bytes(value: Any) -> int:
    """Bytes from an int/float or a size string; ``ValueError``/``TypeError`` saying why not."""
    if value is None:
        return DEFAULT_MEMORY_PER_TASK
    if isinstance(value, str):
        from dask.utils import parse_bytes

        try:
            nbytes = int(parse_bytes(value))
        except (ValueError, TypeError) as exc:
            raise ValueError("cannot parse it as a size") from exc
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("must be bytes or a size string")
    else:
        if not math.isfinite(value):
            raise ValueError("must be finite")
        nbytes = int(value)
    if nbytes < 2**20:
        raise ValueError(f"must be at least 1 MiB, not {nbytes} bytes")
    return nbytes


def parse_memory(value: int | float | str | None) -> int:
    """A memory budget in bytes from an int/float (bytes) or a string such as ``"64 MiB"``.

    ``None`` gives :data:`DEFAULT_MEMORY_PER_TASK`.

    >>> parse_memory("16 MiB"), parse_memory(None) == DEFAULT_MEMORY_PER_TASK
    (16777216, True)
    """
    try:
        return _memory_bytes(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"memory_per_task = {value!r} is invalid: {exc}") from exc


def _number(value: Any) -> float:
    """A real number (not a bool, not NaN) as float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("must be a number")
    if math.isnan(value):
        raise ValueError("must not be NaN")
    return float(value)


def _optional_number(value: Any) -> float | None:
    return None if value is None else _number(value)


def _per_frame(value: Any) -> tuple[float, ...] | None:
    """One finite float per frame, as a tuple (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str | bytes):
        raise TypeError("must be a sequence of numbers, one per frame")
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError("must be a sequence of numbers, one per frame") from exc
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"must be finite numbers, got {out}")
    return out


def _keyword_or(modes: tuple[str, ...]) -> Callable[[Any], Any]:
    """Parse a per-frame option: a mode name, ``"!KEYWORD"`` (IRAF's header keyword form), or numbers."""

    def parse(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            text = value.strip()
            if text in modes:
                return text
            if text.startswith("!") and len(text) > 1 and " " not in text:
                return "!" + text[1:].upper()
            raise ValueError(f"must be one of {', '.join(map(repr, modes))}, '!KEYWORD' or one number per frame")
        return _per_frame(value)

    return parse


_scale = _keyword_or(typing.get_args(ScaleMode))
_zero = _keyword_or(typing.get_args(ZeroMode))
_weights = _keyword_or(typing.get_args(WeightMode))


def parse_statsec(text: str) -> tuple[slice, slice]:
    """An IRAF/FITS section ``"[x1:x2,y1:y2]"`` (1-based, inclusive) as numpy ``(rows, cols)`` slices.

    >>> parse_statsec("[5:30,3:20]")
    (slice(2, 20, None), slice(4, 30, None))
    """
    m = re.fullmatch(r"\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*", text)
    if m is None:
        raise ValueError(f"{text!r} is not a section [x1:x2,y1:y2]")
    x1, x2, y1, y2 = (int(g) for g in m.groups())
    if not (1 <= x1 <= x2 and 1 <= y1 <= y2):
        raise ValueError(f"{text!r}: needs 1 <= x1 <= x2 and 1 <= y1 <= y2")
    return slice(y1 - 1, y2), slice(x1 - 1, x2)


def _statsec(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("must be a section string such as '[100:900,50:2000]'")
    parse_statsec(value)
    return value.strip().replace(" ", "")


def _noise(value: Any) -> float | str:
    """A noise parameter: a finite number >= 0, or a header keyword (a non-empty string)."""
    if isinstance(value, str):
        key = value.strip()
        if not key:
            raise ValueError("must be a number or a header keyword")
        try:
            value = float(key)
        except ValueError:
            return key.upper()
    number = _number(value)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError("must be a finite number >= 0")
    return number


def _bits(value: Any) -> int:
    """A bit mask: an int in [0, 65535] or a string (decimal, ``0x..``, or bits joined by ``|``)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            bits = 0
            for part in text.split("|"):
                bits |= int(part.strip(), 0)
            value = bits
        except ValueError as exc:
            raise ValueError("must be an integer bit mask such as 47, 0x2f or 1|2|4") from exc
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("must be an integer bit mask")
    if not 0 <= value <= 65535:
        raise ValueError("must be between 0 and 65535 (16-bit DQ planes)")
    return int(value)


def _nonzero_factors(value: str | tuple[float, ...]) -> bool:
    return isinstance(value, str) or all(v != 0 for v in value)


def _valid_weights(value: tuple[float, ...]) -> bool:
    return all(v >= 0 for v in value) and any(v > 0 for v in value)


@dataclass(frozen=True)
class CombineConfig(ConfigBase):
    """How a stack of frames is clipped and combined along the frame axis.

    Every field is validated on construction (:class:`ccdask.errors.ConfigError`, also a
    ``ValueError``); :meth:`to_dict` / :meth:`from_dict` round-trip through plain JSON types.
    """

    method: Method = option(
        "mean", "Statistic of the survivors: ``mean`` (weighted if ``weights``), ``median`` or ``sum``."
    )
    clip: Clip = option(
        "sigma",
        "Rejection: ``sigma`` (iterative, as ``astropy.stats.sigma_clip``), ``sigclip`` (IRAF "
        "imcombine's ``reject=sigclip``: center ``mclip``, sample sigma, ``nkeep`` with IRAF's "
        "sign meaning; ``maxiters``, ``center`` and ``spread`` do not apply), ``minmax`` (absolute "
        "thresholds ``min_clip``/``max_clip``), ``avsigclip`` (IRAF: sigma ``sqrt(g c)`` about the center "
        "``c``, ``g`` estimated per image row), ``ccdclip`` (IRAF: sigma from the CCD noise model "
        "``rdnoise``/``gain``/``snoise`` about the median or, ``mclip`` False, the mean without the "
        "lowest and highest value), ``crreject`` (``ccdclip`` rejecting only high values, "
        "``sigma_upper``), ``pclip`` (IRAF: width from the percentile pixel ``pclip``, one pass), ``extrema`` (drop the ``nlow`` lowest and "
        "``nhigh`` highest values per pixel), Siril's ``winsorized`` (sigma clipping about the median, "
        "the sigma of the values winsorized at 1.5 sigma, times 1.134), ``linearfit`` (clipping about a "
        "straight line fitted to the sorted values, the spread the mean absolute residual), ``gesd`` "
        "(the generalized extreme studentized deviate test, ``gesd_fraction``, ``gesd_alpha``) — see "
        ":mod:`ccdask.combine._siril` —, ``varclip`` (DRAGONS: reject values farther than "
        "``sigma_lower``/``sigma_upper`` times their own noise ``sqrt(var)`` from the center, the input "
        "variance planes; ``mclip``, ``maxiters``, ``nkeep``) or ``none``.",
    )
    sigma_lower: float = option(
        3.0,
        "Lower threshold of sigma clipping, in units of the spread (also ``winsorized``/``linearfit``).",
        parse=_number,
        check=lambda v: v >= 0,
        why="must be >= 0",
    )
    sigma_upper: float = option(
        3.0,
        "Upper threshold of sigma clipping, in units of the spread (also ``winsorized``/``linearfit``).",
        parse=_number,
        check=lambda v: v >= 0,
        why="must be >= 0",
    )
    gesd_fraction: float = option(
        0.3,
        "``gesd``: the most outliers tested per pixel, as a fraction of the frames (Siril's "
        "``rej g`` first parameter; non-finite values count among them).",
        parse=_number,
        check=lambda v: 0 < v < 1,
        why="must be between 0 and 1 (exclusive)",
    )
    gesd_alpha: float = option(
        0.05,
        "``gesd``: the significance of the test (Siril's ``rej g`` second parameter).",
        parse=_number,
        check=lambda v: 0 < v < 1,
        why="must be between 0 and 1 (exclusive)",
    )
    maxiters: int | None = option(
        5,
        "Maximum sigma-clipping iterations (``None``: until nothing changes).",
        check=lambda v: v >= 1,
        why="must be an integer >= 1",
    )
    center: Center = option("median", "Center of sigma clipping: ``median`` or ``mean``.")
    spread: Spread = option(
        "mad_std", "Spread of sigma clipping: ``mad_std`` (1.4826 × MAD) or ``std`` (population std)."
    )
    nlow: int = option(
        1,
        "Extrema clipping: number of lowest values rejected per pixel.",
        check=lambda v: v >= 0,
        why="must be an integer >= 0",
    )
    nhigh: int = option(
        1,
        "Extrema clipping: number of highest values rejected per pixel.",
        check=lambda v: v >= 0,
        why="must be an integer >= 0",
    )
    min_clip: float | None = option(
        None, "Values below this (in input units, before scaling) are rejected; any clip mode.", parse=_optional_number
    )
    max_clip: float | None = option(
        None, "Values above this (in input units, before scaling) are rejected; any clip mode.", parse=_optional_number
    )
    nkeep: int = option(
        1,
        "Sigma clipping keeps at least this many survivors where there are that many finite "
        "values (the last iteration whose bounds keep enough is used; 0 reproduces astropy "
        "exactly). With ``clip`` ``sigclip``/``avsigclip``/``ccdclip``/``crreject``/``pclip`` as IRAF: a negative value is the most that may be "
        "rejected (at least ``N + nkeep`` kept), and rejected values nearest the center are put "
        "back until enough survive. Not used by Siril's kinds (``winsorized``, ``linearfit``, ``gesd``): "
        "their floor is Siril's (:mod:`ccdask.combine._siril`).",
    )
    mclip: bool = option(
        True,
        "``clip='sigclip'``/``avsigclip``/``ccdclip``/``crreject``: center on the median (IRAF ``mclip=yes``) or, when False, on the mean "
        "(sigclip, avsigclip: the first iteration's mean excludes the lowest and highest value; ccdclip/crreject: "
        "every iteration's, while more than two remain; as IRAF does).",
    )
    rdnoise: float | str = option(
        0.0,
        "``ccdclip``/``crreject``: read noise in electrons, a number or the header keyword holding it "
        "(as IRAF's ``rdnoise``).",
        parse=_noise,
    )
    gain: float | str = option(
        1.0,
        "``ccdclip``/``crreject``: gain in electrons per data unit, a number or a header keyword.",
        parse=_noise,
        check=lambda v: isinstance(v, str) or v > 0,
        why="must be > 0",
    )
    snoise: float | str = option(
        0.0,
        "``ccdclip``/``crreject``: sensitivity noise as a fraction of the signal, a number or a header keyword.",
        parse=_noise,
    )
    pclip: float = option(
        -0.5,
        "``pclip``: the percentile pixel, counted from the median pixel, as a number of pixels "
        "(``|pclip| >= 1``) or a fraction of the pixels on that side (for the number of frames); "
        "negative: below the median (as IRAF's ``pclip``).",
        parse=_number,
        check=lambda v: v != 0 and math.isfinite(v),
        why="must be finite and non-zero",
    )
    grow: float = option(
        0.0,
        "Also reject, in the same frame, the values within this radius (pixels, ``dx² + dy² <= "
        "grow²``) of a value the rejection rejected (not of non-finite or thresholded values); a pixel "
        "left with no value keeps its ungrown result (as IRAF's ``grow`` does, whatever ``nkeep``). 0: off.",
        parse=_number,
        check=lambda v: 0 <= v <= 64,
        why="must be between 0 and 64 pixels",
    )
    scale: ScaleMode | str | tuple[float, ...] | None = option(
        None,
        "Per-frame multiplicative scale: factors; ``median``/``mean``/``mode`` (IRAF's mode "
        "estimator) of each frame over ``statsec`` or ``exposure``: ``f_i = L / l_i`` with ``l_i`` "
        "the frame's level and ``L`` set by ``normalize``; ``!KEYWORD``: the header value ``k_i`` is "
        "the factor, ``f_i = k_i / K`` (as IRAF).",
        parse=_scale,
        check=_nonzero_factors,
        why="factors must be non-zero",
    )
    zero: ZeroMode | str | tuple[float, ...] | None = option(
        None,
        "Per-frame additive offsets, applied after scaling: ``value * scale + zero``; numbers, "
        "``median``/``mean``/``mode`` over ``statsec`` (``z_i = Z - f_i l_i``, ``Z`` set by "
        "``normalize``) or ``!KEYWORD`` (the header value is added before scaling, as IRAF: "
        "``z_i = f_i k_i``).",
        parse=_zero,
    )
    weights: WeightMode | str | tuple[float, ...] | None = option(
        None,
        "Per-frame weights of the mean (or the sum): numbers, ``exposure`` or ``!KEYWORD``; ``ivar``: per "
        "pixel, the inverse of each value's variance (input variance planes, scaled; ``mean`` only; the "
        "result's variance is then ``1 / sum(1/var)`` over the survivors); ``noise``: ``1 / sigma²`` of "
        "each frame, ``sigma`` its robust noise (1.4826 MAD) over ``statsec``.",
        parse=_weights,
        check=lambda v: isinstance(v, str) or _valid_weights(v),
        why="must be >= 0 with at least one > 0",
    )
    statsec: str | None = option(
        None,
        "Section ``[x1:x2,y1:y2]`` (1-based, inclusive, IRAF/FITS) of each frame on which the "
        "``median``/``mean``/``mode`` scale and zero statistics are computed (default: the whole frame).",
        parse=_statsec,
    )
    normalize: Normalize = option(
        "mean",
        "Statistic scales and zeros relative to the mean level of the stack (``mean``) or to the "
        "first frame (``first``, as IRAF: the first frame is left as it is).",
    )
    dq_bad: int = option(
        DEFAULT_DQ_BAD,
        "With input DQ planes or masks: the bits that make a value bad (IRAF's ``masktype=badbits`` "
        "``maskvalue``); bad values are left out before the rejection. Where every usable value is "
        "saturated (bit 2) the saturated values are combined and the output DQ is flagged saturated. "
        "Default: bad pixel, saturated, cosmic ray, no data, bleed trail (1|2|4|8|32).",
        parse=_bits,
    )
    nrej_plane: bool = option(
        False,
        "Also output the number of values rejected at each pixel (by the rejection, the thresholds "
        "and ``grow``; not counting values masked by DQ or not finite).",
    )
    rejmask_cube: bool = option(
        False,
        "Also output the per-frame rejection masks: a cube ``(N, ny, nx)`` of uint8, 1 where the "
        "frame's value was not used (rejected, masked, thresholded or not finite), as IRAF's ``rejmask``.",
    )
    sigma_plane: bool = option(
        False,
        "Also output the standard deviation of the survivors about the combined value, corrected for "
        "a finite population (IRAF's ``sigma``: ``sqrt(sum w (x - c)² / sum w · n / (n - 1))``).",
    )
    memory_per_task: int = option(
        DEFAULT_MEMORY_PER_TASK,
        "Budget in bytes for one task (its input block, scratch and outputs).",
        parse=_memory_bytes,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.clip == "minmax" and self.min_clip is None and self.max_clip is None:
            raise ConfigError("CombineConfig: clip='minmax' needs min_clip and/or max_clip")
        if self.min_clip is not None and self.max_clip is not None and self.min_clip > self.max_clip:
            raise ConfigError(f"CombineConfig: min_clip {self.min_clip} is above max_clip {self.max_clip}")
        if self.nkeep < 0 and self.clip not in IRAF_CLIPS:
            raise ConfigError(
                f"CombineConfig: nkeep = {self.nkeep} must be >= 0 (negative only with clip="
                + " or ".join(repr(c) for c in IRAF_CLIPS)
                + ")"
            )
        if self.clip in ("ccdclip", "crreject") and (self.scale is not None or self.zero is not None):
            raise ConfigError(
                f"CombineConfig: clip={self.clip!r} with scale or zero is not supported (the noise model "
                "applies to the frames' own units)"
            )
        if self.weights == "ivar" and self.method != "mean":
            raise ConfigError("CombineConfig: weights='ivar' applies to method 'mean'")
        if self.weights is not None and self.method == "median":
            raise ConfigError("CombineConfig: weights apply to method 'mean' or 'sum', not 'median'")
        lengths = {name: len(v) for name in ("scale", "zero", "weights") if isinstance(v := getattr(self, name), tuple)}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"CombineConfig: per-frame sequences differ in length: {lengths}")

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
