"""Rectangles of a chip and their intersection with the blocks of a dask array.

The per-amplifier steps (overscan subtraction, gain, variance) apply a different number to each
amplifier's rectangle. Rather than materialising a full-frame map of those numbers (a large
constant in the graph), each block works out which rectangles it meets from its own location,
given by dask's ``block_info``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..errors import ProfileError
from ..profiles._layout import ChipLayout
from ..sections import Section

__all__ = ["Rect", "block_location", "check_disjoint", "local_slices", "rect_of", "whole_block"]


class Rect(NamedTuple):
    """A half-open, 0-based rectangle ``[y0, y1) x [x0, x1)`` of an image."""

    y0: int
    y1: int
    x0: int
    x1: int


def rect_of(section: Section) -> Rect:
    """The rectangle of pixels a (resolved) section covers, whatever its direction."""
    rows, cols = section.normalized().slices
    return Rect(rows.start, rows.stop, cols.start, cols.stop)


def block_location(block_info: dict[Any, Any] | None) -> Rect:
    """The rectangle of the whole array covered by the block described by ``block_info``."""
    if block_info is None:
        raise RuntimeError("block_info is required: this kernel must be called by map_blocks")
    (y0, y1), (x0, x1) = block_info[0]["array-location"]
    return Rect(y0, y1, x0, x1)


def whole_block(shape: tuple[int, ...]) -> dict[int, dict[str, list[tuple[int, int]]]]:
    """The ``block_info`` of an array that is one block: how the numpy form of a step calls the
    kernel its dask form maps over the blocks."""
    return {0: {"array-location": [(0, int(n)) for n in shape]}}


def local_slices(rect: Rect, block: Rect) -> tuple[slice, slice] | None:
    """Slices of ``block``'s pixels that fall inside ``rect`` (block-local), or None."""
    y0, y1 = max(rect.y0, block.y0), min(rect.y1, block.y1)
    x0, x1 = max(rect.x0, block.x0), min(rect.x1, block.x1)
    if y0 >= y1 or x0 >= x1:
        return None
    return (slice(y0 - block.y0, y1 - block.y0), slice(x0 - block.x0, x1 - block.x0))


def check_disjoint(layout: ChipLayout, rects: dict[str, Rect], what: str) -> None:
    """Raise a ProfileError naming the chip and amplifiers when two rectangles overlap."""
    names = list(rects)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ra, rb = rects[a], rects[b]
            if max(ra.y0, rb.y0) < min(ra.y1, rb.y1) and max(ra.x0, rb.x0) < min(ra.x1, rb.x1):
                raise ProfileError(
                    f"chip {layout.name}: the {what} of amplifiers {a} and {b} overlap; "
                    "each pixel must belong to one amplifier"
                )
