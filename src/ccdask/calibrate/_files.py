"""What the measurement commands and the signature tables share: TOML tables read once per file
version, and raw FITS files read per chip.

- :func:`load_table` reads a TOML file and parses it with a table's own parser, cached per path,
  modification time and size (``crosstalk.file`` and ``linearity.file`` are read by every chip
  task of a night), with one error naming the file for what cannot be read;
- :func:`entries_by_chip` catalogues raw files (strictly: a bad file is an error, not a skipped
  problem) and groups the rows by chip, :func:`read_chip` reads one row's pixels into memory
  (``ccdask gain``, ``ccdask crosstalk`` and ``ccdask ptc`` measure small numbers of frames
  eagerly).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..errors import ConfigError

__all__ = ["entries_by_chip", "load_table", "read_chip"]

T = TypeVar("T")


@cache
def _cached(parse: Callable[..., Any], what: str, path: str, mtime_ns: int, size: int) -> Any:
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc}") from exc
    return parse(doc, source=path)


def load_table(path: str | os.PathLike[str], parse: Callable[..., T], what: str) -> T:
    """``parse(document, source=path)`` of the TOML file ``path``, cached per path, modification
    time and size; ``what`` names the contents in errors ("crosstalk coefficients")."""
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the {what}: {exc.strerror or exc}") from exc
    result: T = _cached(parse, what, p, st.st_mtime_ns, st.st_size)
    return result


def entries_by_chip(paths: Sequence[str | os.PathLike[str]], *, profile: str | None = None) -> dict[str, list[Any]]:
    """The catalogue rows of raw files grouped by chip, in file order (strict: a file that cannot
    be catalogued is an error naming it)."""
    from ..catalog import Catalog

    if not paths:
        raise ConfigError("no raw files given")
    cat = Catalog.scan([os.fspath(p) for p in paths], profile=profile, strict=True)
    out: dict[str, list[Any]] = {}
    for e in cat.entries:
        out.setdefault(e.chip, []).append(e)
    return out


def read_chip(entry: Any) -> np.ndarray:
    """The raw pixels of one catalogue row, in memory (float32, BZERO/BSCALE applied)."""
    from ..io import open_frame

    return np.asarray(open_frame(entry.path, hdu=entry.hdu).compute())
