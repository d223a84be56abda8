"""The zarr store of calibration masters: content keys, atomic installs, checksums, lazy reads.

See :mod:`ccdask.cache._store` for the layout on disk.
"""

from ._store import (
    ALGORITHM_VERSION,
    CACHE_FORMAT,
    CacheEntry,
    CacheKeyError,
    MasterCache,
    PendingPut,
    input_identity,
    master_key,
)

__all__ = [
    "ALGORITHM_VERSION",
    "CACHE_FORMAT",
    "CacheEntry",
    "CacheKeyError",
    "MasterCache",
    "PendingPut",
    "input_identity",
    "master_key",
]
