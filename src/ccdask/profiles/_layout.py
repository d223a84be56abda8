"""Amplifier layouts: where each amplifier's pixels and overscan sit in a raw chip.

A raw chip is the 2-D image of one extension as read out, overscan included. Each
:class:`Amplifier` names its light-sensitive region (``datasec``, raw coordinates, possibly
flipped), its overscan (``biassec``), where its pixels go in the assembled, trimmed chip
(``ccdsec``), and its gain, read noise and saturation level. Later steps (overscan, trim,
gain, saturation) work from this object only, never from header keywords.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ProfileError
from ..sections import Range, Section

__all__ = ["Amplifier", "ChipLayout", "OverscanAxis", "OverscanOrder"]

OverscanAxis = Literal["serial", "parallel"]
"""``serial``: overscan columns beside the data, one value per row; ``parallel``: overscan rows
above/below the data, one value per column."""

OverscanOrder = Literal["serial-first", "parallel-first"]
"""Which of an amplifier's two overscans is subtracted first when it has both."""


@dataclass(frozen=True)
class Amplifier:
    """One amplifier of a chip.

    Parameters
    ----------
    name : str
        Amplifier name (``"A"``, ``"B"``...).
    datasec : Section
        The amplifier's light-sensitive pixels in raw coordinates (resolved; may be flipped).
    ccdsec : Section
        Where those pixels go in the trimmed, assembled chip (resolved, forward ranges).
    biassec : Section or None
        The overscan region in raw coordinates, or None when the chip has no overscan.
    overscan_axis : {"serial", "parallel"} or None
        How the overscan is collapsed: per row (serial) or per column (parallel).
    gain : float
        Electrons per ADU.
    rdnoise : float or None
        Read noise in electrons, when known.
    saturate : float or None
        Saturation level in raw ADU, when known.
    parallel_biassec : Section or None
        A second overscan, rows above/below the data collapsed per column, for an amplifier
        whose ``biassec`` is its serial overscan (DECam ``POSTSEC``, Rubin's parallel overscan).
    overscan_order : {"serial-first", "parallel-first"}
        With two overscans, which one is subtracted first; the second is measured on pixels
        already corrected by the first.
    """

    name: str
    datasec: Section
    ccdsec: Section
    biassec: Section | None = None
    overscan_axis: OverscanAxis | None = None
    gain: float = 1.0
    rdnoise: float | None = None
    saturate: float | None = None
    parallel_biassec: Section | None = None
    overscan_order: OverscanOrder = "serial-first"

    def __post_init__(self) -> None:
        if self.datasec.shape != self.ccdsec.shape:
            raise ProfileError(
                f"amplifier {self.name}: datasec {self.datasec} and ccdsec {self.ccdsec} differ in shape"
            )
        if not (self.gain > 0):
            raise ProfileError(f"amplifier {self.name}: gain must be positive, got {self.gain}")
        if self.biassec is not None and self.overscan_axis is None:
            object.__setattr__(self, "overscan_axis", infer_overscan_axis(self.datasec, self.biassec))
        if self.overscan_order not in ("serial-first", "parallel-first"):
            raise ProfileError(
                f"amplifier {self.name}: overscan_order must be 'serial-first' or "
                f"'parallel-first', got {self.overscan_order!r}"
            )
        if self.parallel_biassec is not None:
            if self.biassec is None or self.overscan_axis != "serial":
                raise ProfileError(
                    f"amplifier {self.name}: a parallel overscan {self.parallel_biassec} needs a serial "
                    f"overscan in biassec (found {self.biassec}, {self.overscan_axis}); an amplifier "
                    "with only a parallel overscan gives it as biassec with overscan_axis = 'parallel'"
                )
            axis = infer_overscan_axis(self.datasec, self.parallel_biassec)
            if axis != "parallel":
                raise ProfileError(
                    f"amplifier {self.name}: parallel overscan {self.parallel_biassec} lies beside the "
                    f"data {self.datasec} (it must share its columns, above or below it)"
                )

    def to_dict(self) -> dict:
        out = {
            "name": self.name,
            "datasec": str(self.datasec),
            "ccdsec": str(self.ccdsec),
            "biassec": None if self.biassec is None else str(self.biassec),
            "overscan_axis": self.overscan_axis,
            "gain": self.gain,
            "rdnoise": self.rdnoise,
            "saturate": self.saturate,
        }
        # written only when used, so the layouts (and cache keys) of single-overscan chips
        # stay what they were before the second overscan existed
        if self.parallel_biassec is not None:
            out["parallel_biassec"] = str(self.parallel_biassec)
            out["overscan_order"] = self.overscan_order
        return out


@dataclass(frozen=True)
class ChipLayout:
    """The amplifiers of one chip and the shapes before and after trimming."""

    name: str
    raw_shape: tuple[int, int]
    amplifiers: tuple[Amplifier, ...]
    detsec: Section | None = None
    trimmed_shape: tuple[int, int] = field(init=False)

    def __post_init__(self) -> None:
        if not self.amplifiers:
            raise ProfileError(f"chip {self.name}: no amplifiers")
        ny = max(a.ccdsec.normalized().y.stop for a in self.amplifiers)
        nx = max(a.ccdsec.normalized().x.stop for a in self.amplifiers)
        object.__setattr__(self, "trimmed_shape", (ny, nx))
        covered = sum(a.ccdsec.shape[0] * a.ccdsec.shape[1] for a in self.amplifiers)
        if covered != ny * nx:
            raise ProfileError(
                f"chip {self.name}: amplifier ccdsecs cover {covered} pixels of a {ny}x{nx} chip "
                "(they must tile it without overlap)"
            )
        for a in self.amplifiers:
            for label, sec in (
                ("datasec", a.datasec),
                ("biassec", a.biassec),
                ("parallel_biassec", a.parallel_biassec),
            ):
                if sec is not None:
                    sec.validate(self.raw_shape, keyword=f"{label} of amplifier {a.name}")

    @property
    def namps(self) -> int:
        return len(self.amplifiers)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "raw_shape": list(self.raw_shape),
            "trimmed_shape": list(self.trimmed_shape),
            "detsec": None if self.detsec is None else str(self.detsec),
            "amplifiers": [a.to_dict() for a in self.amplifiers],
        }

    def describe(self) -> str:
        """One short line, e.g. ``2 amps, 192x160 from 192x192, serial overscan``."""
        axes = sorted(
            {
                ("serial+parallel" if a.parallel_biassec is not None else a.overscan_axis) or "no"
                for a in self.amplifiers
            }
        )
        ny, nx = self.trimmed_shape
        ry, rx = self.raw_shape
        return f"{self.namps} amp{'s' if self.namps > 1 else ''}, {ny}x{nx} from {ry}x{rx}, {'/'.join(axes)} overscan"


def infer_overscan_axis(datasec: Section, biassec: Section) -> OverscanAxis:
    """Serial when the overscan sits beside the data (shares its rows), parallel when above/below."""
    d, b = datasec.normalized(), biassec.normalized()

    def overlap(r1: Range, r2: Range) -> int:
        return max(0, min(r1.stop, r2.stop) - max(r1.start, r2.start) + 1)

    rows_shared = overlap(d.y, b.y) / d.y.length
    cols_shared = overlap(d.x, b.x) / d.x.length
    if rows_shared >= 0.5 and overlap(d.x, b.x) == 0:
        return "serial"
    if cols_shared >= 0.5 and overlap(d.y, b.y) == 0:
        return "parallel"
    raise ProfileError(
        f"cannot tell whether overscan {biassec} is serial or parallel for data {datasec}: "
        "set overscan_axis in the instrument profile"
    )
