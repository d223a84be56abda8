"""The chips of reduced frames: where their SCI/VAR/DQ planes are and their sky coordinates.

:func:`read_chips` scans the headers of ccdask's reduced files (``docs/outputs.md``: per chip
``SCI``, ``VAR``, ``DQ`` extensions sharing an ``EXTVER``) and returns one :class:`ChipFrame` per
chip, with its celestial WCS checked: a chip without a usable one is a :class:`WcsError` naming the
file and extension. Only headers are read.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import FitsReadError, WcsError

__all__ = ["ChipFrame", "chip_wcs", "read_chips", "wcs_cards", "wcs_from_text"]

#: Header keywords that make up a (celestial, possibly SIP-distorted) WCS.
_WCS_KEY = re.compile(
    r"^(WCSAXES|CTYPE\d|CUNIT\d|CRVAL\d|CRPIX\d|CDELT\d|CROTA\d|CD\d_\d|PC\d_\d|PV\d_\d+|PS\d_\d+"
    r"|LONPOLE|LATPOLE|RADESYS|EQUINOX|EPOCH|A_\w+|B_\w+|AP_\w+|BP_\w+|NAXIS\d?)$"
)


def wcs_cards(header: Any) -> str:
    """The WCS cards of ``header`` as FITS header text (what :func:`wcs_from_text` reads back)."""
    from astropy.io import fits

    out = fits.Header()
    for card in header.cards:
        if _WCS_KEY.match(card.keyword):
            out.append(card, end=True)
    return str(out.tostring())


@lru_cache(maxsize=256)
def wcs_from_text(text: str) -> Any:
    """The WCS of header text, built once per process.

    Chips and footprints carry their WCS as text, never as a pickled ``astropy.wcs.WCS`` (whose
    pickle goes through a header printed with fewer digits): every process builds the same WCS
    from the same cards, so results do not depend on where a task runs.
    """
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(fits.Header.fromstring(text), naxis=2)


@dataclass(frozen=True)
class ChipFrame:
    """One chip of one reduced exposure (picklable: sources and a WCS).

    Attributes
    ----------
    path : str
        The reduced file.
    extver : int
        The chip's ``EXTVER``.
    chip : str
        ``CCDNAME`` (or ``EXTVER`` as text).
    index : int
        Position of the chip's exposure among the inputs (the frame axis of the stack).
    sci, var, dq : ccdask.io.ImageSource
        The planes (``var``/``dq`` None when the file has none).
    wcs_text : str
        The chip's WCS cards (:attr:`wcs` builds the ``astropy.wcs.WCS``, 0-based pixels).
    exptime : float or None
        ``EXPTIME`` of the chip or of its file.
    """

    path: str
    extver: int
    chip: str
    index: int
    sci: Any
    var: Any
    dq: Any
    wcs_text: str
    exptime: float | None

    @property
    def wcs(self) -> Any:
        return wcs_from_text(self.wcs_text)

    @property
    def shape(self) -> tuple[int, int]:
        ny, nx = self.sci.shape
        return int(ny), int(nx)

    @property
    def label(self) -> str:
        """``'path[SCI,2]'`` for messages."""
        return f"{self.path}[SCI,{self.extver}]"


def chip_wcs(header: Any, label: str) -> Any:
    """The celestial WCS of ``header``, or :class:`WcsError` naming ``label`` and the problem."""
    from astropy.wcs import WCS, FITSFixedWarning

    ctypes = [str(header.get(f"CTYPE{i}", "")).strip() for i in (1, 2)]
    if not any(ctypes):
        raise WcsError(f"{label}: no WCS (no CTYPE1/CTYPE2 cards); coadd needs sky coordinates")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=2)
    except Exception as exc:  # astropy raises several kinds for broken WCS cards
        raise WcsError(f"{label}: the WCS cannot be read: {exc}") from exc
    if not wcs.has_celestial or wcs.naxis != 2:
        raise WcsError(f"{label}: the WCS is not celestial (CTYPE = {ctypes}); coadd needs RA/Dec axes")
    matrix = np.asarray(wcs.pixel_scale_matrix, dtype=np.float64)
    det = float(np.linalg.det(matrix))
    if not (math.isfinite(det) and det != 0.0):
        raise WcsError(f"{label}: the WCS pixel matrix {matrix.tolist()} is singular or not finite")
    try:
        ra, dec = wcs.all_pix2world([0.0], [0.0], 0)
    except Exception as exc:
        raise WcsError(f"{label}: the WCS cannot transform pixels to the sky: {exc}") from exc
    if not (np.isfinite(ra).all() and np.isfinite(dec).all()):
        raise WcsError(f"{label}: the WCS gives no sky position for pixel (0, 0)")
    return wcs


def _checked_cards(header: Any, label: str) -> str:
    text = wcs_cards(header)
    from astropy.io import fits

    chip_wcs(fits.Header.fromstring(text), label)
    return text


def _exptime(header: Any) -> float | None:
    value = header.get("EXPTIME", header.get("EXPOSURE"))
    try:
        t = float(value)
    except (TypeError, ValueError):
        return None
    return t if math.isfinite(t) and t > 0 else None


def read_chips(paths: Sequence[str | os.PathLike[str]]) -> list[ChipFrame]:
    """Every chip of the reduced files ``paths``, in file order then ``EXTVER`` order.

    Raises
    ------
    FitsReadError
        A file is missing, unreadable, or has no ``SCI`` extension.
    WcsError
        A chip has no usable celestial WCS (the message names the file and extension).
    """
    from ..io import ImageSource, scan_file

    if not paths:
        raise FitsReadError("coadd needs at least one reduced frame")
    chips: list[ChipFrame] = []
    for index, p in enumerate(paths):
        path = os.fspath(p)
        if not os.path.isfile(path):
            raise FitsReadError(f"{path}: no such file")
        infos = scan_file(path)
        planes: dict[tuple[str, int], Any] = {}
        for info in infos:
            name = (info.extname or "").strip().upper()
            if name in ("SCI", "VAR", "DQ"):
                planes[(name, int(info.extver or 1))] = info
        extvers = sorted(v for (name, v) in planes if name == "SCI")
        if not extvers:
            raise FitsReadError(f"{path}: no SCI extension; coadd reads ccdask's reduced frames (SCI/VAR/DQ per chip)")
        for v in extvers:
            sci = planes[("SCI", v)]
            label = f"{path}[SCI,{v}]"
            var = planes.get(("VAR", v))
            dq = planes.get(("DQ", v))
            for other, what in ((var, "VAR"), (dq, "DQ")):
                if other is not None and tuple(other.shape) != tuple(sci.shape):
                    raise FitsReadError(
                        f"{path}[{what},{v}]: shape {tuple(other.shape)} differs from SCI {tuple(sci.shape)}"
                    )
            chips.append(
                ChipFrame(
                    path=path,
                    extver=v,
                    chip=str(sci.header.get("CCDNAME", v)).strip(),
                    index=index,
                    sci=ImageSource.from_info(sci),
                    var=None if var is None else ImageSource.from_info(var),
                    dq=None if dq is None else ImageSource.from_info(dq),
                    wcs_text=_checked_cards(sci.header, label),
                    exptime=_exptime(sci.header),
                )
            )
    return chips
