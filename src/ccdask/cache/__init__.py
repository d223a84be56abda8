"""The zarr store of calibration masters: content keys, atomic installs, checksums, lazy reads.

See :mod:`ccdask.cache._store` for the layout on disk.
"""

from ._store import (
    CACHE_FORMAT,
    CacheEntry,
    CacheKeyError,
    MasterCache,
    PendingPut,
    input_identity,
    master_key,
)
from ._versions import KIND_VERSIONS, STEP_VERSIONS, versions_of

__all__ = [
    "CACHE_FORMAT",
    "KIND_VERSIONS",
    "STEP_VERSIONS",
    "CacheEntry",
    "CacheKeyError",
    "MasterCache",
    "PendingPut",
    "input_identity",
    "master_key",
    "versions_of",
]
