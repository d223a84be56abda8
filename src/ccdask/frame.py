"""Lazy containers passed between calibration steps: a chip image in flight and a master."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import dask.array as da
from astropy.io import fits

if TYPE_CHECKING:  # the container only carries a layout; profiles build them
    from .profiles import ChipLayout


__all__ = ["Frame", "Master", "to_ccddata"]


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
        """An astropy ``CCDData`` of this frame (see :func:`to_ccddata`)."""
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


def to_ccddata(frame: Frame, **compute_kwargs: Any) -> Any:
    """A ``CCDData`` (electrons) of a calibrated frame, computing its SCI, VAR and DQ together."""
    import dask
    import numpy as np
    from astropy.nddata import CCDData, VarianceUncertainty

    parts = [frame.sci, frame.dq] + ([frame.var] if frame.var is not None else [])
    values = dask.compute(*parts, **compute_kwargs)
    sci, dq = values[0], values[1]
    var = values[2] if frame.var is not None else None
    header = frame.header.copy()
    for line in frame.history:
        header.add_history(line)
    ccd = CCDData(
        np.asarray(sci),
        unit="electron",
        meta=header,
        mask=np.asarray(dq) != 0,
        uncertainty=None if var is None else VarianceUncertainty(np.asarray(var)),
    )
    ccd.flags = np.asarray(dq)
    return ccd
