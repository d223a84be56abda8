"""The arithmetic calibration steps, as pure functions from dask arrays to dask arrays.

In the order a raw chip goes through them::

    sub = subtract_overscan(raw, layout, OverscanConfig(model="legendre", order=3))
    e = apply_gain(assemble(sub, layout), layout)                 # ADU -> electrons
    var = initial_variance(e, layout)                             # rn² + max(signal, 0)
    sci, var = subtract_bias(e, var, bias_master)
    sci, var = subtract_dark(sci, var, dark_master, exptime)
    sci, var, low = divide_flat(sci, var, flat_master, min_value=0.1)

Nothing is computed while the graph is built; per-amplifier overscan level and noise are lazy
scalars from :func:`overscan_stats`.
"""

from ._arith import (
    Corrected,
    FlatCorrected,
    apply_gain,
    divide_flat,
    initial_variance,
    read_noise_from_overscan,
    subtract_bias,
    subtract_dark,
)
from ._assemble import assemble, trim
from ._config import OverscanConfig, OverscanMethod, OverscanModel
from ._overscan import OverscanStats, overscan_model, overscan_stats, subtract_overscan

__all__ = [
    "Corrected",
    "FlatCorrected",
    "OverscanConfig",
    "OverscanMethod",
    "OverscanModel",
    "OverscanStats",
    "apply_gain",
    "assemble",
    "divide_flat",
    "initial_variance",
    "overscan_model",
    "overscan_stats",
    "read_noise_from_overscan",
    "subtract_bias",
    "subtract_dark",
    "subtract_overscan",
    "trim",
]


def __getattr__(name: str):
    """``ccdask.calibrate.process`` (ccdproc's ``ccd_process``) lives in :mod:`ccdask.process`,
    which builds on this package; it is looked up lazily to avoid a circular import."""
    if name in ("process", "process_entry", "ChipMasters"):
        from .. import process as _process

        return getattr(_process, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
