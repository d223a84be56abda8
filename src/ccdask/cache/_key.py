"""Cache keys: a canonical JSON of everything a master depends on, hashed.

The key of a master is ``sha256(canonical JSON)[:24]`` of a document holding the cache format,
the master kind, the chip, the identities of its input frames (sorted, so the order in which
files were listed does not matter), the step parameters (which carry the keys of upstream
masters) and an algorithm version. Two masters with the same key are interchangeable.

Canonical JSON here means: mappings with string keys in sorted order, sequences as lists,
numpy scalars and small numpy arrays as plain Python values, paths as strings, floats written
by ``repr`` (Python's shortest round-tripping form, so ``0.1`` is always ``0.1``), no
whitespace. Anything else (functions, arbitrary objects, bytes) is refused with a
:class:`CacheKeyError` naming where in the structure it sits: a silently ``str()``-ed object
could hide a difference between two runs and make two different masters share a key.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CacheError

__all__ = [
    "ALGORITHM_VERSION",
    "CACHE_FORMAT",
    "KEY_LENGTH",
    "CacheKeyError",
    "canonical_json",
    "check_key",
    "input_identity",
    "master_key",
    "normalise",
]

ALGORITHM_VERSION = "1"
"""Default algorithm version hashed into every key; bump it when a kernel's output changes.

A step may pass its own version (``master_key(..., algorithm_version="flat-2")``) so a change in
one step invalidates only the masters it makes.
"""

CACHE_FORMAT = 1
"""Version of the on-disk layout; part of every key, so a layout change never reads old entries."""

KEY_LENGTH = 24
"""Hex digits kept from the sha256 digest (96 bits: collisions are not a practical concern)."""

IDENTITY_FIELDS = ("path", "hdu", "size", "mtime_ns", "header")
"""Fields every input identity must carry (extra fields are allowed and hashed too)."""

_KEY_RE = re.compile(r"[0-9a-f]{16,64}")
_MAX_ARRAY_ITEMS = 10_000


class CacheKeyError(CacheError, ValueError):
    """A cache key cannot be made (non-JSON-able parameter, bad identity) or is malformed."""


def normalise(value: Any, where: str = "value") -> Any:
    """Turn ``value`` into plain JSON types, refusing what has no canonical JSON form.

    Parameters
    ----------
    value : object
        ``None``, bool, int, float, str, mappings with string keys, lists, tuples, sets,
        numpy scalars, numpy arrays of at most 10 000 items, :class:`os.PathLike`, or an
        astropy ``Header`` (its card text).
    where : str, optional
        Name of ``value`` for error messages; nested items extend it (``params['clip'][0]``).

    Returns
    -------
    object
        The value built from dicts, lists, str, int, float, bool and None only. Sets become
        sorted lists; numpy arrays become ``{"dtype", "shape", "values"}`` dicts.

    Raises
    ------
    CacheKeyError
        For any other type, non-string mapping keys, or a large array.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, np.generic):
        if isinstance(value, np.bool_ | np.integer | np.floating):
            return normalise(value.item(), where)
        raise CacheKeyError(f"{where}: numpy {value.dtype} scalar has no canonical JSON form")
    if isinstance(value, np.ndarray):
        if value.size > _MAX_ARRAY_ITEMS or value.dtype.kind not in "biuf":
            raise CacheKeyError(
                f"{where}: numpy array of {value.size} {value.dtype} items cannot go into a cache "
                f"key (only numeric arrays of at most {_MAX_ARRAY_ITEMS} items)"
            )
        return {
            "dtype": value.dtype.str,
            "shape": list(value.shape),
            "values": value.ravel().tolist(),
        }
    if isinstance(value, os.PathLike):
        path = os.fspath(value)
        if isinstance(path, str):
            return path
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise CacheKeyError(
                    f"{where}: mapping key {k!r} is a {type(k).__name__}, not a str"
                )
            out[k] = normalise(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, list | tuple):
        return [normalise(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, set | frozenset):
        items = [normalise(v, f"{where}{{...}}") for v in value]
        return sorted(items, key=canonical_json)
    if type(value).__name__ == "Header" and hasattr(value, "tostring"):  # astropy.io.fits.Header
        return value.tostring(sep="\n")
    raise CacheKeyError(
        f"{where}: {type(value).__module__}.{type(value).__qualname__} value {value!r:.60} "
        "is not JSON-able; pass plain numbers, strings, lists or dicts"
    )


def canonical_json(value: Any) -> str:
    """Canonical JSON text of an already normalised value (sorted keys, no spaces, float repr).

    Non-finite floats are written ``NaN``/``Infinity`` (deterministic, though not strict JSON).
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True
    )


def _check_identity(identity: Any, i: int) -> dict[str, Any]:
    where = f"inputs[{i}]"
    if not isinstance(identity, Mapping):
        raise CacheKeyError(
            f"{where}: an input identity must be a dict, not {type(identity).__name__}"
        )
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
    algorithm_version: str = ALGORITHM_VERSION,
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
    algorithm_version : str, optional
        Version of the code that makes this kind of master (default :data:`ALGORITHM_VERSION`).

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
        "algorithm_version": normalise(algorithm_version, "algorithm_version"),
    }
    digest = hashlib.sha256(canonical_json(doc).encode("ascii")).hexdigest()
    return digest[:KEY_LENGTH]


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
