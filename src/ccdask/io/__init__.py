"""Header scanning and lazy readers for raw FITS frames.

:func:`scan_file` describes every 2-D image HDU of a file from its headers alone;
:class:`ImageSource` reads any region of one HDU as float32 physical values; :func:`open_frame`,
:func:`open_stack` and :func:`open_chips` lift sources to lazy dask arrays. Plain files are
memory-mapped per chunk, fpack files decompress only the tiles a chunk needs, and gzip-wrapped
files are decompressed once per file per graph.

The readers (and dask.array with them) are imported on first use: scanning headers, what the
catalogue does, needs astropy's FITS module only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._scan import HduInfo, scan_file, select_hdu

if TYPE_CHECKING:
    from ._read import ImageSource, default_chunks, image_source, open_chips, open_frame, open_stack

_READERS = ("ImageSource", "default_chunks", "image_source", "open_chips", "open_frame", "open_stack")

__all__ = [
    "HduInfo",
    "ImageSource",
    "default_chunks",
    "image_source",
    "open_chips",
    "open_frame",
    "open_stack",
    "scan_file",
    "select_hdu",
]


def __getattr__(name: str) -> Any:
    if name in _READERS:
        value = getattr(importlib.import_module("ccdask.io._read"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ccdask.io' has no attribute {name!r}")
