"""Nonlinearity per amplifier: a polynomial or a lookup table applied in ADU after the overscan.

A CCD's output is not quite proportional to the charge: the measured signal ``m`` (ADU above
the overscan) of a true signal ``t`` falls short (or runs ahead) by a fraction of a percent
near full well. The correction maps each data pixel's ``m`` to ``t`` with, per amplifier,

* a polynomial: ``t = m + c2 m² + c3 m³ + ...`` (``coefficients = [c2, c3, ...]``), or
* a lookup table: ``t = interp(m, measured, true)`` (piecewise linear between the table's
  points, extended by the end segments' slopes beyond them).

It applies to the overscan-subtracted raw frame (before trimming and gain), so it acts on the
signal, not on the bias level. The table is TOML (``linearity.file`` in the configuration)::

    [[linearity]]
    chip = "CCD1"                 # optional: every chip with this amplifier
    amp = "A"
    coefficients = [4.0e-7]       # polynomial, or:
    # measured = [0, 10000, 30000, 60000]
    # true = [0, 10040, 30370, 61500]
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..errors import ConfigError, ShapeMismatchError
from ..profiles._layout import ChipLayout
from ..utils._options import ConfigBase, option
from ._files import load_table
from ._regions import block_location, local_slices, rect_of, whole_block

__all__ = [
    "LinearityConfig",
    "LinearityCurve",
    "LinearityTable",
    "correct_linearity",
    "correct_linearity_np",
    "load_linearity",
]


@dataclass(frozen=True)
class LinearityConfig(ConfigBase):
    """Nonlinearity correction per amplifier (off unless a curve file is given)."""

    file: str | None = option(
        None,
        "TOML file of nonlinearity curves per amplifier ([[linearity]] tables: chip, amp and either "
        "coefficients (polynomial) or measured/true (lookup table); see docs/signatures.md); None: no correction",
    )


@dataclass(frozen=True)
class LinearityCurve:
    """One amplifier's correction: ``coefficients`` (c2, c3...) or a ``measured``/``true`` table."""

    amp: str
    chip: str | None = None
    coefficients: tuple[float, ...] = ()
    measured: tuple[float, ...] = ()
    true: tuple[float, ...] = ()

    def apply(self, m: np.ndarray) -> np.ndarray:
        """The true signal of measured signal ``m`` (float64)."""
        m = np.asarray(m, dtype=np.float64)
        if self.measured:
            x, y = np.asarray(self.measured), np.asarray(self.true)
            out = np.interp(m, x, y)
            lo, hi = m < x[0], m > x[-1]
            if lo.any():
                out[lo] = y[0] + (m[lo] - x[0]) * (y[1] - y[0]) / (x[1] - x[0])
            if hi.any():
                out[hi] = y[-1] + (m[hi] - x[-1]) * (y[-1] - y[-2]) / (x[-1] - x[-2])
            return out
        out = m.copy()
        power = m * m
        for c in self.coefficients:
            out += c * power
            power = power * m
        return out

    def describe(self) -> str:
        if self.measured:
            return f"{self.amp}: table of {len(self.measured)} points"
        return f"{self.amp}: " + " ".join(f"{c:+.4g}m^{k + 2}" for k, c in enumerate(self.coefficients))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"amp": self.amp}
        if self.chip is not None:
            out["chip"] = self.chip
        if self.measured:
            out["measured"], out["true"] = list(self.measured), list(self.true)
        else:
            out["coefficients"] = list(self.coefficients)
        return out


@dataclass(frozen=True)
class LinearityTable:
    """The curves of a camera."""

    curves: tuple[LinearityCurve, ...]
    source: str = "<table>"

    def for_chip(self, layout: ChipLayout) -> dict[str, LinearityCurve]:
        """Amplifier name → curve for ``layout``'s chip (a chip's own curve wins)."""
        names = {a.name for a in layout.amplifiers}
        out = {c.amp: c for c in self.curves if c.chip is None and c.amp in names}
        for c in self.curves:
            if c.chip == layout.name:
                if c.amp not in names:
                    raise ConfigError(
                        f"{self.source}: linearity curve of chip {layout.name} names amplifier {c.amp!r}, which the "
                        f"chip does not have (it has {', '.join(sorted(names))})"
                    )
                out[c.amp] = c
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"linearity": [c.to_dict() for c in self.curves]}


def _floats(source: str, i: int, key: str, value: object) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        raise ConfigError(f"{source}: linearity curve {i + 1}: {key} must be a list of finite numbers, got {value!r}")
    return tuple(float(v) for v in value)


def parse_linearity(doc: dict[str, Any], *, source: str = "<dict>") -> LinearityTable:
    """A :class:`LinearityTable` from the parsed TOML ``{"linearity": [{...}, ...]}``."""
    if set(doc) - {"linearity"}:
        raise ConfigError(f"{source}: unknown top-level entries {sorted(set(doc) - {'linearity'})}")
    rows = doc.get("linearity", [])
    if not isinstance(rows, list):
        raise ConfigError(f"{source}: linearity must be a list of tables ([[linearity]])")
    curves = []
    seen = set()
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ConfigError(f"{source}: linearity curve {i + 1} is not a table")
        unknown = set(row) - {"chip", "amp", "coefficients", "measured", "true"}
        if unknown:
            raise ConfigError(f"{source}: linearity curve {i + 1}: unknown keys {sorted(unknown)}")
        amp, chip = row.get("amp"), row.get("chip")
        if not isinstance(amp, str):
            raise ConfigError(f"{source}: linearity curve {i + 1} needs an amplifier name (amp)")
        if chip is not None and not isinstance(chip, str):
            raise ConfigError(f"{source}: linearity curve {i + 1}: chip must be a name, got {chip!r}")
        poly = "coefficients" in row
        table = "measured" in row or "true" in row
        if poly == table:
            raise ConfigError(
                f"{source}: linearity curve {i + 1} ({amp}) needs either coefficients or measured and true"
            )
        if (chip, amp) in seen:
            raise ConfigError(f"{source}: linearity curve of {amp}{' of ' + chip if chip else ''} is given twice")
        seen.add((chip, amp))
        if poly:
            curves.append(
                LinearityCurve(amp, chip, coefficients=_floats(source, i, "coefficients", row["coefficients"]))
            )
            continue
        x = _floats(source, i, "measured", row.get("measured"))
        y = _floats(source, i, "true", row.get("true"))
        if len(x) != len(y) or len(x) < 2 or any(b <= a for a, b in itertools.pairwise(x)):
            raise ConfigError(
                f"{source}: linearity curve {i + 1} ({amp}): measured and true must be equally long (2 points or "
                "more) and measured strictly increasing"
            )
        curves.append(LinearityCurve(amp, chip, measured=x, true=y))
    return LinearityTable(tuple(curves), source)


def load_linearity(path: str | os.PathLike[str]) -> LinearityTable:
    """The curves of a TOML file (cached per path, modification time and size)."""
    return load_table(path, parse_linearity, "linearity curves")


def _kernel(block: np.ndarray, items: tuple[Any, ...], block_info: dict[Any, Any] | None = None) -> np.ndarray:
    where = block_location(block_info)
    out = np.asarray(block, dtype=np.float32).copy()
    for rect, curve in items:
        sl = local_slices(rect, where)
        if sl is None:
            continue
        out[sl] = curve.apply(block[sl]).astype(np.float32)
    return out


def _items(shape: tuple[int, ...], layout: ChipLayout, table: LinearityTable) -> tuple[Any, ...]:
    if tuple(shape) != tuple(layout.raw_shape):
        raise ShapeMismatchError(
            f"chip {layout.name}: array of shape {tuple(shape)} does not match the layout's raw shape "
            f"{tuple(layout.raw_shape)}"
        )
    curves = table.for_chip(layout)
    return tuple((rect_of(a.datasec), curves[a.name]) for a in layout.amplifiers if a.name in curves)


def correct_linearity_np(data: np.ndarray, layout: ChipLayout, table: LinearityTable) -> np.ndarray:
    """:func:`correct_linearity` on a whole overscan-subtracted raw chip in memory."""
    arr = np.asarray(data)
    return _kernel(arr, _items(arr.shape, layout, table), block_info=whole_block(arr.shape))


def correct_linearity(data: da.Array, layout: ChipLayout, table: LinearityTable) -> da.Array:
    """Correct each amplifier's data section of an overscan-subtracted raw chip, lazily.

    Pixel by pixel (any chunking gives the same result); pixels outside the data sections and
    amplifiers without a curve keep their values. float32 out.
    """
    arr = data if isinstance(data, da.Array) else da.asarray(data)
    return arr.map_blocks(
        _kernel,
        items=_items(arr.shape, layout, table),
        dtype=np.float32,
        meta=np.array((), dtype=np.float32),
        token=f"linearity-{layout.name}",
    )


def linearity_history(table: LinearityTable, layout: ChipLayout) -> str:
    """The HISTORY line of the correction of one chip."""
    curves = table.for_chip(layout)
    text = "; ".join(c.describe() for c in curves.values()) or "no curve for this chip"
    return f"linearity: {Path(table.source).name}: {text}"
