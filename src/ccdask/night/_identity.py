"""The night's identities (CCDKEYs, packed-master names) under the cache's one hashing policy."""

from __future__ import annotations

import hashlib
from typing import Any

from ..cache._key import canonical_json, normalise

__all__ = ["canonical_hash"]


def canonical_hash(obj: Any, length: int = 24) -> str:
    """sha256 of the canonical JSON of ``obj`` (refusing types without a canonical form)."""
    return hashlib.sha256(canonical_json(normalise(obj)).encode()).hexdigest()[:length]
