"""Atomic writes: every output is written under a temporary name beside its final one, then
renamed into place, so a reader sees no file or a complete one and a killed run leaves only
``.tmp-*`` names (which the next reduction of that folder removes)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError

__all__ = ["TMP_PREFIX", "atomic_path", "atomic_write_text", "check_output", "temporary_beside"]

TMP_PREFIX = ".tmp-"
"""How every temporary output name starts."""


def temporary_beside(final: str | os.PathLike[str]) -> Path:
    """A fresh temporary name in ``final``'s folder (same file system, so the rename is atomic)."""
    path = Path(final)
    return path.with_name(f"{TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; when the block succeeds, rename it to ``final``.

    The folder is created if needed. On any error the temporary file is removed and ``final``
    is untouched. With ``overwrite=False`` an existing ``final`` is never replaced, even one that
    appears while the block runs (a hard link claims the name; file systems without hard links
    fall back to a check then a rename): :class:`~ccdask.errors.ConfigError` names it.
    """
    path = Path(final)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(path)
    try:
        yield tmp
        if overwrite:
            os.replace(tmp, path)
        else:
            _claim(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_output(final: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """``final`` as a Path, checked before any work is done for it: a
    :class:`~ccdask.errors.ConfigError` if it exists (without ``overwrite``) or its folder does
    not (commands refuse to create folders the user did not ask for)."""
    path = Path(final)
    if path.exists() and not overwrite:
        raise ConfigError(f"{path}: exists; pass --overwrite to replace it")
    if str(path.parent) and not path.parent.is_dir():
        raise ConfigError(f"{path}: the folder {path.parent} does not exist")
    return path


def _claim(tmp: Path, path: Path) -> None:
    exists = ConfigError(f"{path}: exists; pass --overwrite to replace it")
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise exists from None
    except OSError:  # no hard links on this file system
        if path.exists():
            raise exists from None
        os.replace(tmp, path)


def atomic_write_text(final: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text)
    return Path(final)
