"""The result of a coadd: lazy planes on the footprint, one-call compute, header, atomic write."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._config import CoaddConfig
from ._footprint import Footprint

__all__ = ["CoaddResult"]


@dataclass(frozen=True)
class CoaddResult:
    """A coadd: dask arrays until :meth:`compute` (then numpy arrays), all of ``footprint.shape``.

    Attributes
    ----------
    sci : float32
        Inverse-variance weighted mean of the surviving resampled frames (e- per output pixel;
        NaN where nothing survived).
    var : float32
        Its variance (e-²).
    coverage : int16
        Number of frames that survived at each pixel.
    exposure : float32
        Sum of the survivors' exposure times (s; NaN where one had no EXPTIME).
    dq : int16
        ``8`` (no data) where nothing survived, else 0.
    footprint : Footprint
    config : CoaddConfig
    inputs : tuple of str
        The reduced files.
    nchips : int
        Chips that fall on the footprint.
    depth : int
        Most chips overlapping one place (it sets the tile height).
    tile : (int, int)
        Tile shape of the graph.
    """

    sci: Any
    var: Any
    coverage: Any
    exposure: Any
    dq: Any
    footprint: Footprint
    config: CoaddConfig
    inputs: tuple[str, ...]
    nchips: int
    depth: int
    tile: tuple[int, int]
    name: str | None = None

    @property
    def is_lazy(self) -> bool:
        return not isinstance(self.sci, np.ndarray)

    def planes(self) -> dict[str, Any]:
        """``{"SCI": sci, "VAR": var, "DQ": dq, "COVERAGE": coverage, "EXPOSURE": exposure}``."""
        return {"SCI": self.sci, "VAR": self.var, "DQ": self.dq, "COVERAGE": self.coverage, "EXPOSURE": self.exposure}

    def compute(self, **kwargs: Any) -> CoaddResult:
        """Every plane in one ``dask.compute`` call (keyword arguments go to it)."""
        if not self.is_lazy:
            return self
        import dask

        sci, var, cov, expo, dqp = dask.compute(self.sci, self.var, self.coverage, self.exposure, self.dq, **kwargs)
        return dataclasses.replace(self, sci=sci, var=var, coverage=cov, exposure=expo, dq=dqp)

    def header(self) -> Any:
        """The primary header: provenance (inputs, options, versions)."""
        from astropy.io import fits

        from .._version import __version__

        hdr = fits.Header()
        cfg = self.config
        hdr["NCOMBINE"] = (len(self.inputs), "number of exposures coadded")
        hdr["NCHIPS"] = (self.nchips, "number of chips on the footprint")
        hdr["COADDMTH"] = (cfg.method, "resampling (reproject)")
        hdr["COADDWGT"] = (cfg.weights, "weights of the survivors")
        hdr["COADDSCL"] = (cfg.scale, "per-exposure flux scale")
        hdr["COADDREJ"] = (cfg.reject.clip, "rejection along the frame axis")
        hdr["CMBSIGLO"] = (cfg.reject.sigma_lower, "sigma clipping lower threshold")
        hdr["CMBSIGHI"] = (cfg.reject.sigma_upper, "sigma clipping upper threshold")
        hdr["COADDDQ"] = (cfg.reject_bits, "DQ bits left out before resampling")
        hdr["CCDASKV"] = (__version__, "ccdask version")
        try:
            from importlib.metadata import version

            hdr["REPROJV"] = (version("reproject"), "reproject version")
        except Exception:  # pragma: no cover - an install without metadata
            pass
        if len(self.inputs) <= 999:
            for i, name in enumerate(self.inputs, start=1):
                hdr[f"IMCMB{i:03d}"] = (os.path.basename(name)[:68], "input frame")
        hdr.add_history(f"ccdask {__version__} coadd: " + ", ".join(f"{k}={v}" for k, v in _flat(cfg.to_dict())))
        return hdr

    def write(self, path: str | os.PathLike[str], *, overwrite: bool = False, **compute_kwargs: Any) -> Path:
        """Write the coadd to ``path`` (see :func:`ccdask.coadd.write_coadd`)."""
        from ._write import write_coadd

        return write_coadd(self, path, overwrite=overwrite, **compute_kwargs)


def _flat(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flat(v, f"{prefix}{k}.")
        elif v is not None:
            out.append((f"{prefix}{k}", v))
    return out
