"""Lazy containers passed between calibration steps: a chip image in flight and a master."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import dask.array as da
from astropy.io import fits

from .layout import ChipLayout

__all__ = ["Frame", "Master"]


@dataclass(frozen=True)
class Frame:
    """One chip of one exposure: lazy SCI (electrons after gain), VAR (e-²) and DQ (uint16 bits).

    ``history`` collects one line per applied step (with its parameters) for the output headers;
    ``stats`` collects small lazy scalars (e.g. per-amplifier overscan level and noise) that the
    pipeline computes together with the pixels.
    """

    sci: da.Array
    var: da.Array | None
    dq: da.Array
    chip: str
    header: fits.Header = field(repr=False)
    layout: ChipLayout | None = None
    exptime: float | None = None
    name: str = ""
    history: tuple[str, ...] = ()
    stats: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_ccddata(self, **compute_kwargs: Any) -> Any:
        """An astropy ``CCDData`` of this frame (see :func:`ccdask.ccddata.to_ccddata`)."""
        from .ccddata import to_ccddata

        return to_ccddata(self, **compute_kwargs)

    def evolve(self, *, step: str | None = None, **changes: Any) -> Frame:
        """A copy with ``changes`` applied and ``step`` (if given) appended to the history."""
        if step is not None:
            changes["history"] = (*self.history, step)
        return replace(self, **changes)


@dataclass(frozen=True)
class Master:
    """A combined calibration master for one chip: lazy data, variance and survivor count.

    ``kind`` is ``bias``, ``dark`` (a rate in e-/s) or ``flat`` (normalised response);
    ``filter`` is set for flats; ``exptime`` for a dark combined at one exposure time
    (``nearest`` dark mode); ``meta`` holds provenance (inputs, parameters, cache key).
    """

    kind: str
    chip: str
    data: da.Array
    variance: da.Array | None
    count: da.Array | None
    ncombine: int
    filter: str | None = None
    exptime: float | None = None
    meta: dict[str, Any] = field(default_factory=dict, repr=False)
