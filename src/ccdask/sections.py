"""FITS/IRAF image sections as Python slices.

A section string such as ``[17:528,1:520]`` names a region of an image in FITS order: the first
range is along NAXIS1 (x, columns, the *last* numpy axis), ranges are 1-based and inclusive, and a
range may run backwards (``[2048:1,1:4096]``) to say the region is read flipped. ``*`` means the
whole axis and ``-*`` the whole axis flipped. Whitespace inside the brackets is allowed
(``[   4:  13,   1: 520]`` is real, from an SAAO header).

>>> s = Section.parse("[17:528,1:520]")
>>> s.slices
(slice(0, 520, 1), slice(16, 528, 1))
>>> s.shape
(520, 512)
>>> str(Section.parse("[2048:1, 1:4096]"))
'[2048:1,1:4096]'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SectionError, where

__all__ = ["Range", "Section", "parse_section", "section_from_slices"]

_RANGE = re.compile(r"^\s*(?:(-?\*)|(\d+)\s*:\s*(\d+)|(\d+))\s*$")


@dataclass(frozen=True, order=True)
class Range:
    """A 1-based inclusive FITS range along one axis; ``start > stop`` means flipped.

    ``None`` bounds stand for ``*`` (the whole axis) until :meth:`resolve` fixes them.
    """

    start: int | None
    stop: int | None
    flipped: bool = False

    @property
    def resolved(self) -> bool:
        return self.start is not None and self.stop is not None

    def resolve(self, length: int) -> Range:
        """Replace ``*`` by the whole axis of ``length`` pixels."""
        if self.resolved:
            return self
        return Range(length, 1, True) if self.flipped else Range(1, length, False)

    @property
    def length(self) -> int:
        self._need_resolved()
        return abs(self.stop - self.start) + 1

    @property
    def step(self) -> int:
        self._need_resolved()
        return -1 if self.start > self.stop else 1

    def to_slice(self) -> slice:
        """The 0-based numpy slice selecting this range (negative step when flipped)."""
        self._need_resolved()
        lo, hi = sorted((self.start, self.stop))
        if self.start <= self.stop:
            return slice(lo - 1, hi, 1)
        return slice(hi - 1, lo - 2 if lo >= 2 else None, -1)

    def __str__(self) -> str:
        if not self.resolved:
            return "-*" if self.flipped else "*"
        return f"{self.start}:{self.stop}"

    def _need_resolved(self) -> None:
        if not self.resolved:
            raise SectionError("range '*' must be resolved against an image shape first")


@dataclass(frozen=True)
class Section:
    """A rectangular FITS section: ``x`` along NAXIS1 (columns), ``y`` along NAXIS2 (rows)."""

    x: Range
    y: Range

    @classmethod
    def parse(cls, text: str, *, keyword: str | None = None, path: object = None, hdu: object = None) -> Section:
        """Parse ``'[x1:x2,y1:y2]'``; errors name the keyword, file and extension when given."""
        label = f"{where(path, hdu)}{keyword + '=' if keyword else ''}{text!r}"
        if not isinstance(text, str):
            raise SectionError(f"{label}: a section must be a string like '[1:100,1:200]'")
        body = text.strip()
        if not (body.startswith("[") and body.endswith("]")):
            raise SectionError(f"{label}: a section must be enclosed in brackets")
        parts = body[1:-1].split(",")
        if len(parts) != 2:
            raise SectionError(f"{label}: expected two ranges (x, y), found {len(parts)}")
        ranges = []
        for axis, part in zip("xy", parts, strict=True):
            m = _RANGE.match(part)
            if m is None:
                raise SectionError(f"{label}: cannot read the {axis} range {part.strip()!r}")
            star, a, b, single = m.groups()
            if star is not None:
                ranges.append(Range(None, None, star.startswith("-")))
                continue
            lo, hi = (int(single), int(single)) if single is not None else (int(a), int(b))
            if lo < 1 or hi < 1:
                raise SectionError(f"{label}: FITS pixel indices start at 1, found {lo}:{hi}")
            ranges.append(Range(lo, hi, lo > hi))
        return cls(ranges[0], ranges[1])

    def resolve(self, shape: tuple[int, int]) -> Section:
        """Resolve ``*`` ranges against a numpy ``(ny, nx)`` shape."""
        return Section(self.x.resolve(shape[1]), self.y.resolve(shape[0]))

    def validate(
        self, shape: tuple[int, int], *, keyword: str | None = None, path: object = None, hdu: object = None
    ) -> Section:
        """Resolve against ``shape`` and check the section lies inside it; returns the resolved section."""
        sec = self.resolve(shape)
        ny, nx = shape
        for axis, rng, n in (("x", sec.x, nx), ("y", sec.y, ny)):
            if max(rng.start, rng.stop) > n:
                label = f"{where(path, hdu)}{keyword + '=' if keyword else ''}'{self}'"
                raise SectionError(
                    f"{label}: {axis} range {rng} lies outside the image ({axis} has {n} pixels, "
                    f"image shape (ny, nx) = {tuple(shape)})"
                )
        return sec

    @property
    def slices(self) -> tuple[slice, slice]:
        """The numpy ``(rows, columns)`` slices."""
        return (self.y.to_slice(), self.x.to_slice())

    @property
    def shape(self) -> tuple[int, int]:
        """The numpy ``(ny, nx)`` shape of the region."""
        return (self.y.length, self.x.length)

    @property
    def flipped(self) -> tuple[bool, bool]:
        """Whether the (y, x) axes run backwards."""
        return (self.y.step < 0, self.x.step < 0)

    def normalized(self) -> Section:
        """The same pixels with both ranges running forwards."""

        def fwd(r: Range) -> Range:
            lo, hi = sorted((r.start, r.stop))
            return Range(lo, hi, False)

        return Section(fwd(self.x), fwd(self.y))

    def __str__(self) -> str:
        return f"[{self.x},{self.y}]"


def parse_section(text: str, shape: tuple[int, int] | None = None, **where_) -> Section:
    """Parse a section and, when ``shape`` is given, validate and resolve it against the image."""
    sec = Section.parse(text, **where_)
    return sec.validate(shape, **where_) if shape is not None else sec


def section_from_slices(rows: slice, cols: slice, shape: tuple[int, int]) -> Section:
    """The FITS section equivalent to numpy ``image[rows, cols]`` for an image of ``shape``."""

    def one(s: slice, n: int) -> Range:
        start, stop, step = s.indices(n)
        if step not in (1, -1):
            raise SectionError(f"FITS sections cannot express a step of {step}")
        idx = range(start, stop, step)
        if len(idx) == 0:
            raise SectionError(f"slice {s} selects no pixels of an axis of {n}")
        first, last = idx[0] + 1, idx[-1] + 1
        return Range(first, last, first > last)

    return Section(one(cols, shape[1]), one(rows, shape[0]))
