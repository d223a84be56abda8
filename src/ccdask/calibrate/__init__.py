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
from ._cosmics import CosmicConfig
from ._crosstalk import CrosstalkConfig
from ._linearity import LinearityConfig
from ._masks import MaskConfig
from ._overscan import OverscanStats, overscan_model, overscan_stats, subtract_overscan
from ._process import ChipMasters, ProcessConfig, process, process_entry, process_in_memory

__all__ = [
    "ChipMasters",
    "Corrected",
    "CosmicConfig",
    "CrosstalkConfig",
    "FlatCorrected",
    "LinearityConfig",
    "MaskConfig",
    "OverscanConfig",
    "OverscanMethod",
    "OverscanModel",
    "OverscanStats",
    "ProcessConfig",
    "apply_gain",
    "assemble",
    "divide_flat",
    "initial_variance",
    "overscan_model",
    "overscan_stats",
    "process",
    "process_entry",
    "process_in_memory",
    "read_noise_from_overscan",
    "subtract_bias",
    "subtract_dark",
    "subtract_overscan",
    "trim",
]
