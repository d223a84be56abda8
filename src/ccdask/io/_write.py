"""Safe FITS output: multi-extension files assembled from per-chip parts, renamed into place.

A reduced exposure of a mosaic is written by one task per chip, each writing its own part file
(never two writers on one file), and a final task that streams the parts after a primary header
into a temporary file and renames it to the final name. A reader therefore sees either no file
or a complete one; a killed run leaves only ``.tmp-*`` names, which later runs clean up.
Every HDU carries CHECKSUM/DATASUM cards.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..utils import TMP_PREFIX, atomic_path

__all__ = ["TMP_PREFIX", "atomic_writeto", "concat_parts", "write_part"]


def atomic_writeto(hdul: fits.HDUList, path: str | os.PathLike[str]) -> Path:
    """Write ``hdul`` (with checksums) to a temporary name beside ``path`` and rename it over ``path``."""
    with atomic_path(path) as tmp:
        hdul.writeto(tmp, checksum=True)
    return Path(path)


def write_part(path: str | os.PathLike[str], hdus: Sequence[tuple[fits.Header, np.ndarray]]) -> str:
    """Write image extensions ``(header, data)`` to a part file (with a throwaway primary HDU)."""
    hdul = fits.HDUList([fits.PrimaryHDU()] + [fits.ImageHDU(data=d, header=h) for h, d in hdus])
    return str(atomic_writeto(hdul, path))


def concat_parts(
    final: str | os.PathLike[str],
    primary: fits.Header,
    parts: Sequence[str | os.PathLike[str]],
    *,
    remove_parts: bool = True,
) -> str:
    """Stream a primary header and the extensions of ``parts`` into ``final`` atomically."""
    phdu = fits.PrimaryHDU(header=primary)
    phdu.header["EXTEND"] = True
    phdu.add_checksum()
    with atomic_path(final) as tmp, open(tmp, "wb") as out:
        phdu.writeto(out)
        for part in parts:
            with fits.open(part, memmap=False, lazy_load_hdus=True) as h:
                start = h.fileinfo(1)["hdrLoc"]
            with open(part, "rb") as src:
                src.seek(start)
                shutil.copyfileobj(src, out, length=8 << 20)
        out.flush()
        os.fsync(out.fileno())
    if remove_parts:
        for part in parts:
            Path(part).unlink(missing_ok=True)
    return str(final)
