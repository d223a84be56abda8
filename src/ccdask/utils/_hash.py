"""The canonical hash: one identity policy for cache keys, master identities and science CCDKEYs.

Canonical JSON here means: mappings with string keys in sorted order, sequences as lists,
numpy scalars and small numpy arrays as plain Python values, paths as strings, floats written
by ``repr`` (Python's shortest round-tripping form, so ``0.1`` is always ``0.1``), no
whitespace. Anything else (functions, arbitrary objects, bytes) is refused with an
:class:`~ccdask.errors.IdentityError` naming where in the structure it sits: a silently
``str()``-ed object could hide a difference between two runs and make two different things
share an identity.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import IdentityError

__all__ = ["canonical_hash", "canonical_json", "normalise"]

_MAX_ARRAY_ITEMS = 10_000


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
    IdentityError
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
        raise IdentityError(f"{where}: numpy {value.dtype} scalar has no canonical JSON form")
    if isinstance(value, np.ndarray):
        if value.size > _MAX_ARRAY_ITEMS or value.dtype.kind not in "biuf":
            raise IdentityError(
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
                raise IdentityError(f"{where}: mapping key {k!r} is a {type(k).__name__}, not a str")
            out[k] = normalise(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, list | tuple):
        return [normalise(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, set | frozenset):
        items = [normalise(v, f"{where}{{...}}") for v in value]
        return sorted(items, key=canonical_json)
    if type(value).__name__ == "Header" and hasattr(value, "tostring"):  # astropy.io.fits.Header
        return value.tostring(sep="\n")
    raise IdentityError(
        f"{where}: {type(value).__module__}.{type(value).__qualname__} value {value!r:.60} "
        "is not JSON-able; pass plain numbers, strings, lists or dicts"
    )


def canonical_json(value: Any) -> str:
    """Canonical JSON text of an already normalised value (sorted keys, no spaces, float repr).

    Non-finite floats are written ``NaN``/``Infinity`` (deterministic, though not strict JSON).
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def canonical_hash(value: Any, length: int = 24, *, where: str = "value") -> str:
    """The first ``length`` hex digits of the sha256 of ``value``'s canonical JSON.

    Raises
    ------
    IdentityError
        ``value`` holds something without a canonical form (see :func:`normalise`).
    """
    return hashlib.sha256(canonical_json(normalise(value, where)).encode("ascii")).hexdigest()[:length]
