"""The stacking engine: clip and combine frames along the frame axis, out of core, on Dask.

:func:`combine` is the entry point (lazy; arrays or FITS files in, :class:`CombineResult` out).
The numerical work happens in :func:`combine_block`, a numba kernel on one ``(N, ty, tx)`` numpy
block, which the dask layer maps over tiles sized by a per-task memory budget.

>>> import numpy as np
>>> from ccdask.combine import combine
>>> frames = np.random.default_rng(0).normal(100.0, 1.0, (7, 32, 32)).astype("float32")
>>> frames[3, 5, 5] = 1e4  # a cosmic ray
>>> master = combine(frames, name="bias-CCD1")  # lazy: nothing computed yet
>>> master.data.name.startswith("combine-bias-CCD1-")
True
>>> done = master.compute()  # one dask.compute for data and count
>>> int(done.count[5, 5]), int(done.count[0, 0]), done.ncombine
(6, 7, 7)
>>> bool(abs(done.data[5, 5] - 100) < 2)
True
"""

from __future__ import annotations

from ._config import DEFAULT_MEMORY_PER_TASK, CombineConfig
from ._kernels import BlockResult, combine_block, grow_offsets, pclip_offset, sorting_network
from ._result import ALGORITHM_VERSION, CombineResult, provenance_header
from ._stack import combine, scale_sample_step, tile_shape

__all__ = [
    "ALGORITHM_VERSION",
    "DEFAULT_MEMORY_PER_TASK",
    "BlockResult",
    "CombineConfig",
    "CombineResult",
    "combine",
    "combine_block",
    "grow_offsets",
    "pclip_offset",
    "provenance_header",
    "scale_sample_step",
    "sorting_network",
    "tile_shape",
]
