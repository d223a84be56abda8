"""Writing a coadd without holding it: tiles stored straight into a preallocated FITS file.

:func:`write_coadd` lays out the whole file first under a temporary name beside the target (the
primary header with the provenance, then ``SCI``, ``VAR``, ``DQ``, ``COVERAGE``, ``EXPOSURE``
image extensions, each with the footprint's WCS; the data areas left as holes of the right
size), then stores each tile of each plane into its place through a memory map opened by the task
that computed it (:func:`dask.array.store`, one writer per region), and renames the file into
place when every tile is in. Neither the client nor a worker ever holds a whole plane, so memory
stays flat in the footprint size. A failed run leaves only the temporary name, removed at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..utils import atomic_path

if TYPE_CHECKING:
    from ._result import CoaddResult

__all__ = ["PLANES", "write_coadd"]

#: ``(EXTNAME, big-endian dtype, BUNIT, comment)`` of each extension, in file order.
PLANES = (
    ("SCI", ">f4", "electron", "coadded signal"),
    ("VAR", ">f4", "electron2", "variance of SCI"),
    ("DQ", ">i2", "", "data quality bits (8: no data)"),
    ("COVERAGE", ">i2", "", "number of frames used"),
    ("EXPOSURE", ">f4", "s", "sum of the exposure times used"),
)
_BLOCK = 2880


@dataclass(frozen=True)
class _Region:
    """A FITS image's data area as a ``dask.array.store`` target: ``target[rows, cols] = tile``
    opens a memory map of the file (in whatever process runs the store task) and writes there."""

    path: str
    offset: int
    shape: tuple[int, int]
    dtype: str

    def __setitem__(self, key: tuple[slice, slice], value: np.ndarray) -> None:
        mm = np.memmap(self.path, dtype=self.dtype, mode="r+", offset=self.offset, shape=self.shape)
        try:
            mm[key] = value
            mm.flush()
        finally:
            del mm


def _padded(n: int) -> int:
    return -(-n // _BLOCK) * _BLOCK


def _layout(tmp: Path, result: CoaddResult) -> list[_Region]:
    """Write the headers and size the data areas of ``tmp``; the regions of the planes."""
    from astropy.io import fits

    ny, nx = result.footprint.shape
    wcs_cards = result.footprint.header()
    primary = fits.PrimaryHDU().header
    primary["EXTEND"] = True
    primary.extend(result.header(), end=True)
    regions = []
    with open(tmp, "wb") as f:
        f.write(primary.tostring().encode("ascii"))
        for extname, dtype, bunit, comment in PLANES:
            h = fits.Header()
            h["XTENSION"] = ("IMAGE", "image extension")
            h["BITPIX"] = 8 * np.dtype(dtype).itemsize * (-1 if np.dtype(dtype).kind == "f" else 1)
            h["NAXIS"] = 2
            h["NAXIS1"] = nx
            h["NAXIS2"] = ny
            h["PCOUNT"] = 0
            h["GCOUNT"] = 1
            h["EXTNAME"] = (extname, comment)
            if bunit:
                h["BUNIT"] = bunit
            h.extend(wcs_cards, end=True)
            f.write(h.tostring().encode("ascii"))
            offset = f.tell()
            nbytes = ny * nx * np.dtype(dtype).itemsize
            f.seek(offset + _padded(nbytes) - 1)
            f.write(b"\0")  # the data area: a hole of zeros until the tiles are stored
            regions.append(_Region(str(tmp), offset, (ny, nx), dtype))
    return regions


def write_coadd(
    result: CoaddResult, path: str | os.PathLike[str], *, overwrite: bool = False, **compute_kwargs: Any
) -> Path:
    """Compute ``result`` tile by tile into the FITS file ``path`` (see the module notes).

    Keyword arguments go to :func:`dask.array.store` (``scheduler=``...); with a
    ``distributed.Client`` as the default scheduler its workers write the tiles (they must
    see the output folder).
    """
    import dask.array as da

    final = Path(path)
    with atomic_path(final, overwrite=overwrite) as tmp:
        regions = _layout(tmp, result)
        planes = result.planes()
        arrays = [planes[extname] for extname, *_ in PLANES]
        if result.is_lazy:
            da.store(arrays, regions, lock=False, compute=True, **compute_kwargs)
        else:
            for arr, reg in zip(arrays, regions, strict=True):
                reg[slice(None), slice(None)] = np.asarray(arr)
    return final
