"""Cache keys: the canonical hash of everything a master depends on.

The key of a master is :func:`ccdask.utils.canonical_hash` (sha256 of the canonical JSON, 24 hex
digits) of a document holding the cache format, the master kind, the chip, the identities of
its input frames (sorted, so the order in which files were listed does not matter), the step
parameters (which carry the keys of upstream masters) and the algorithm versions of the code
that made it (:func:`ccdask.cache._versions.versions_of`). Two masters with the same key are
interchangeable. A value without a canonical form is refused with a :class:`CacheKeyError`
naming where it sits.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import CacheError, IdentityError
from ..utils import canonical_hash, canonical_json
from ..utils import normalise as _normalise
from ._versions import versions_of

__all__ = [
    "CACHE_FORMAT",
    "KEY_LENGTH",
    "CacheKeyError",
    "canonical_json",
    "check_key",
    "input_identity",
    "master_key",
    "normalise",
]

CACHE_FORMAT = 1
"""Version of the on-disk layout; part of every key, so a layout change never reads old entries."""

KEY_LENGTH = 24
"""Hex digits kept from the sha256 digest (96 bits: collisions are not a practical concern)."""

IDENTITY_FIELDS = ("path", "hdu", "size", "mtime_ns", "header")
"""Fields every input identity must carry (extra fields are allowed and hashed too)."""

_KEY_RE = re.compile(r"[0-9a-f]{16,64}")


class CacheKeyError(CacheError, IdentityError):
    """A cache key cannot be made (non-JSON-able parameter, bad identity) or is malformed."""


def normalise(value: Any, where: str = "value") -> Any:
    """:func:`ccdask.utils.normalise` raising :class:`CacheKeyError` (see there)."""
    try:
        return _normalise(value, where)
    except IdentityError as exc:
        raise CacheKeyError(str(exc)) from exc


def _check_identity(identity: Any, i: int) -> dict[str, Any]:
    where = f"inputs[{i}]"
    if not isinstance(identity, Mapping):
        raise CacheKeyError(f"{where}: an input identity must be a dict, not {type(identity).__name__}")
    missing = [f for f in IDENTITY_FIELDS if f not in identity]
    if missing:
        raise CacheKeyError(
            f"{where} ({identity.get('path', '?')}): identity lacks {', '.join(missing)} "
            f"(needs {', '.join(IDENTITY_FIELDS)}; see ccdask.cache._store.input_identity)"
        )
    return normalise(identity, where)


def master_key(
    kind: str,
    inputs: Any,
    params: Mapping[str, Any],
    *,
    chip: str,
    algorithm_version: Mapping[str, int] | None = None,
) -> str:
    """The content address of a master: a hex digest of everything that determines its pixels.

    Parameters
    ----------
    kind : str
        Master kind (``bias``, ``dark``, ``flat``...).
    inputs : iterable of dict
        One identity per input frame, each with at least ``path``, ``hdu``, ``size``,
        ``mtime_ns`` and ``header`` (see :func:`input_identity`). Order does not matter.
    params : mapping
        The step parameters (clipping, scaling, filter, exposure time...) including the keys of
        the upstream masters used to calibrate the inputs (e.g. ``{"bias": "3fa1..."}``).
    chip : str
        Chip name.
    algorithm_version : mapping of str to int, optional
        Versions of the code that makes this kind of master; by default those of the version
        table (:func:`ccdask.cache._versions.versions_of`), read at call time.

    Returns
    -------
    str
        :data:`KEY_LENGTH` lowercase hex digits.

    Raises
    ------
    CacheKeyError
        When an identity lacks a field or a parameter has no canonical JSON form.
    """
    if isinstance(inputs, Mapping | str | bytes):
        raise CacheKeyError("inputs: expected a sequence of identity dicts")
    identities = [_check_identity(ident, i) for i, ident in enumerate(inputs)]
    identities.sort(key=canonical_json)
    if not isinstance(params, Mapping):
        raise CacheKeyError(f"params: expected a dict, not {type(params).__name__}")
    doc = {
        "format": CACHE_FORMAT,
        "kind": normalise(kind, "kind"),
        "chip": normalise(chip, "chip"),
        "inputs": identities,
        "params": normalise(params, "params"),
        "algorithm_version": normalise(
            versions_of(kind) if algorithm_version is None else algorithm_version, "algorithm_version"
        ),
    }
    return canonical_hash(doc, KEY_LENGTH)


def input_identity(path: str | os.PathLike[str], hdu: int | str, header: Any) -> dict[str, Any]:
    """The identity of one input (file, extension) for :func:`master_key`.

    Parameters
    ----------
    path : path-like
        The raw file; it is stat-ed (size, modification time in ns), not read.
    hdu : int or str
        The extension the frame comes from.
    header : str or astropy.io.fits.Header
        The extension header (its card text is hashed, so an edited keyword changes the key).

    Returns
    -------
    dict
        ``{"path", "hdu", "size", "mtime_ns", "header"}`` with the absolute path.
    """
    p = Path(path).absolute()
    st = p.stat()
    return {
        "path": str(p),
        "hdu": normalise(hdu, "hdu"),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "header": normalise(header, "header"),
    }


def check_key(key: Any) -> str:
    """Return ``key`` if it looks like a cache key (16-64 lowercase hex digits), else raise.

    Keys become directory names, so anything else (``..``, slashes) is refused.
    """
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise CacheKeyError(f"{key!r} is not a cache key (expected lowercase hex digits)")
    return key
