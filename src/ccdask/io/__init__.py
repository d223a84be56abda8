"""Header scanning and lazy readers for raw FITS frames.

:func:`scan_file` describes every 2-D image HDU of a file from its headers alone;
:class:`ImageSource` reads any region of one HDU as float32 physical values; :func:`open_frame`,
:func:`open_stack` and :func:`open_chips` lift sources to lazy dask arrays. Plain files are
memory-mapped per chunk, fpack files decompress only the tiles a chunk needs, and gzip-wrapped
files are decompressed once per file per graph.
"""

from __future__ import annotations

from ._read import ImageSource, default_chunks, image_source, open_chips, open_frame, open_stack
from ._scan import HduInfo, scan_file, select_hdu

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
