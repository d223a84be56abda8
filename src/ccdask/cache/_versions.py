"""The one table of algorithm versions: what code made a master, hashed into its cache key.

Bump the entry of the code whose output changed, and exactly the cached masters it made stop
matching (they are rebuilt on the next run; the old entries are left for ``ccdask cache prune``):

* ``calibrate``: the per-chip chain every master's frames go through (overscan, trim, gain,
  variance, bias/dark subtraction): every master.
* ``combine``: the stacking kernel (:data:`ccdask.combine.ALGORITHM_VERSION`, also written as
  ``CMBALGV`` in every master's header): every master.
* ``bias``, ``dark``, ``flat``, ``fringe``: what the night does to one kind's stack (dark rates per second,
  flat normalisation): masters of that kind only.
* ``illumination``: the twilight illumination model of flats; carried in the parameters of the
  flats that use one (``flat.illumination``), so only those.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ..combine import ALGORITHM_VERSION as COMBINE_VERSION

__all__ = ["KIND_VERSIONS", "STEP_VERSIONS", "versions_of"]

STEP_VERSIONS: dict[str, int] = {"calibrate": 1, "combine": COMBINE_VERSION, "illumination": 1}
"""Versions of the steps shared by several kinds of master."""

KIND_VERSIONS: dict[str, int] = {"bias": 1, "dark": 1, "flat": 1, "fringe": 1}
"""Versions of what is done to each kind of master after stacking."""


def versions_of(kind: str) -> Mapping[str, int]:
    """The versions hashed into the key of a master of ``kind`` (read from the tables now).

    A kind the table does not know (a master made by user code through the cache API) gets the
    shared steps only.
    """
    out = {"calibrate": STEP_VERSIONS["calibrate"], "combine": STEP_VERSIONS["combine"]}
    if kind in KIND_VERSIONS:
        out[kind] = KIND_VERSIONS[kind]
    return MappingProxyType(out)
