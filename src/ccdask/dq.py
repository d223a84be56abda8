"""Data-quality bits of the DQ plane (contract, see DESIGN)."""

from __future__ import annotations

import numpy as np

__all__ = ["BAD", "BLEED", "COSMIC", "DQ_DTYPE", "INTERPOLATED", "NODATA", "SATURATED", "describe"]

DQ_DTYPE = np.uint16
BAD = 1  #: static bad pixel (hot, dead, low response, user mask)
SATURATED = 2  #: saturated in the raw frame (full well / ADC)
COSMIC = 4  #: cosmic-ray hit
NODATA = 8  #: no data, no good inputs, or a non-finite value
INTERPOLATED = 16  #: value replaced by interpolation of its neighbours
BLEED = 32  #: in a bleed trail of a saturated star (see ccdask.calibrate._bleed; only when masks.bleed is on)

_NAMES = {
    BAD: "bad pixel",
    SATURATED: "saturated",
    COSMIC: "cosmic ray",
    NODATA: "no data",
    INTERPOLATED: "interpolated",
    BLEED: "bleed trail",
}


def describe(value: int) -> list[str]:
    """Names of the bits set in ``value``."""
    return [name for bit, name in _NAMES.items() if int(value) & bit]
