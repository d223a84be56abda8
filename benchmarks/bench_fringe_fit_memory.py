"""Peak memory of one fringe scale fit (``fit_fringe_np``), per pixel of the chip.

    .venv/bin/python benchmarks/bench_fringe_fit_memory.py

A 1024 x 1024 float32 frame (sky 1000 e-, noise 30 e-, a 40 e- wave pattern) and a fringe frame
of the same pattern (noise 5 e-, variance, count 6); the peak of the allocations made by the fit
(``tracemalloc``: the inputs themselves are not counted), in bytes per pixel. The science task of
a fringe-corrected chip and the stage's fit tasks hold this on top of their planes.
"""

from __future__ import annotations

import tracemalloc

import numpy as np

from ccdask.calibrate._fringe import FringeFrame, fit_fringe_np


def main() -> None:
    rng = np.random.default_rng(1)
    n = 1024
    y, x = np.mgrid[:n, :n]
    pattern = np.sin(x / 5.0 + y / 9.0).astype(np.float32)
    frame = FringeFrame(
        (40 * pattern + rng.normal(0, 5, (n, n))).astype(np.float32),
        np.full((n, n), 25, np.float32),
        np.full((n, n), 6, np.int16),
        6,
        (1.0,) * 6,
    )
    sci = (1000 + 40 * pattern + rng.normal(0, 30, (n, n))).astype(np.float32)
    var = np.full((n, n), 900, np.float32)
    dq = np.zeros((n, n), np.int16)
    tracemalloc.start()
    fit = fit_fringe_np(sci, var, dq, frame, index=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(
        f"fit_fringe_np peak {peak / 2**20:.0f} MiB for {n} x {n}: {peak / n / n:.0f} bytes/pixel (scale {fit.scale:.4f})"
    )


if __name__ == "__main__":
    main()
