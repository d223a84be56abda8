"""Throughput of each arithmetic calibration step on a ``large`` simulated chip.

One ``large`` chip (4096 x 2048 data pixels, two amplifiers with 32 serial overscan columns each:
raw 4096 x 2112) science frame is simulated once with :func:`ccdask.simulate._night.simulate_night`
into ``--dir`` (default ``benchmarks/_data/steps``, git-ignored) and reused. Its raw pixels are
read into memory once and split into chunks of ``--rows`` whole rows, so what is timed is the
step itself, not the reader (see the "Reading" section of RESULTS.md for that). Masters are the
simulator's truth (bias pattern x gain, dark rate, flat response) with float32 variance planes,
also in memory.

Each step's input is persisted first; the step's output is then persisted (computed into
in-memory chunks, no final concatenation) on dask's threaded scheduler with ``--threads``
threads. Steps run round-robin ``--repeat`` times and the best time of each is kept (background
load on shared machines only ever adds time). Throughput is in data megapixels per second
(8.39 Mpix per frame for every step, overscan included, so the numbers add up along a chain),
per wall-clock second and per CPU-second of this process (all its threads; less sensitive to
other processes competing for the cores).
The last row runs the whole chain from raw pixels to the flat-fielded frame in one graph.

Cosmic rays are not measured here: ``benchmarks/bench_cosmics.py`` (the owner of
``ccdask.calibrate._cosmics``) measures them.

Usage::

    .venv/bin/python benchmarks/bench_steps.py [--dir DIR] [--rows 1024] [--threads 2]
        [--repeat 5]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import dask
import dask.array as da
import numpy as np

from ccdask.calibrate import (
    OverscanConfig,
    apply_gain,
    assemble,
    divide_flat,
    initial_variance,
    subtract_bias,
    subtract_dark,
    subtract_overscan,
)
from ccdask.catalog import Catalog
from ccdask.frame import Master
from ccdask.io import open_frame
from ccdask.simulate._night import SimulatedNight, simulate_night

HERE = Path(__file__).resolve().parent
DEFAULT_DIR = HERE / "_data" / "steps"


def make_night(root: Path) -> SimulatedNight:
    """The simulated large night (one science frame), made once and reused."""
    if (root / "truth.json").is_file():
        return SimulatedNight.load(root)
    return simulate_night(
        root,
        chips=1,
        amps=2,
        size="large",
        nbias=0,
        ndark=0,
        nflat=0,
        nscience=1,
        filters=("r",),
        science_exptime=120.0,
        seed=1,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--rows", type=int, default=1024, help="rows per chunk")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    t0 = time.perf_counter()
    night = make_night(args.dir)
    print(f"night ready in {time.perf_counter() - t0:.1f} s: {args.dir}")
    (entry,) = Catalog.scan(night.files["science"]).entries
    layout = entry.layout
    truth = night.truth()
    chip = entry.chip
    raw_np = open_frame(entry.path, entry.hdu).compute()
    ny, nx = layout.trimmed_shape
    mpix = ny * nx / 1e6
    rows = args.rows

    def mem(x: np.ndarray) -> da.Array:
        """A persisted dask array of float32 chunks of whole rows (in memory, no graph)."""
        arr = da.from_array(np.ascontiguousarray(x, dtype=np.float32), chunks=(rows, -1))
        return arr.persist(scheduler="threads")

    gains = np.empty(layout.trimmed_shape)
    for amp in layout.amplifiers:
        gains[amp.ccdsec.slices] = amp.gain
    bias = Master("bias", chip, mem(truth.array(chip, "bias_pattern") * gains), mem(np.full((ny, nx), 1.0)), None, 20)
    dark = Master("dark", chip, mem(truth.array(chip, "dark_rate")), mem(np.full((ny, nx), 1e-6)), None, 10)
    flat = Master("flat", chip, mem(truth.array(chip, "flat_r")), mem(np.full((ny, nx), 1e-6)), None, 10, filter="r")
    exptime = float(entry.exptime)

    with dask.config.set(scheduler="threads", num_workers=args.threads):
        raw = mem(raw_np)
        sub = subtract_overscan(raw, layout).persist()
        trimmed = assemble(sub, layout).rechunk((rows, -1)).persist()
        electrons = apply_gain(trimmed, layout).persist()
        var = initial_variance(electrons, layout).persist()
        b_sci, b_var = dask.persist(*subtract_bias(electrons, var, bias))
        d_sci, d_var = dask.persist(*subtract_dark(b_sci, b_var, dark, exptime))

        def chain() -> tuple:
            s = subtract_overscan(raw, layout, OverscanConfig(model="legendre", order=3))
            e = apply_gain(assemble(s, layout), layout)
            v = initial_variance(e, layout)
            s1, v1 = subtract_bias(e, v, bias)
            s2, v2 = subtract_dark(s1, v1, dark, exptime)
            return divide_flat(s2, v2, flat, min_value=0.1)

        steps: dict[str, Callable[[], object]] = {
            "overscan: median, no model": lambda: subtract_overscan(raw, layout),
            "overscan: mean, Legendre order 3": lambda: subtract_overscan(
                raw, layout, OverscanConfig(method="mean", model="legendre", order=3)
            ),
            "overscan: median, spline 8 knots": lambda: subtract_overscan(
                raw, layout, OverscanConfig(model="spline", knots=8)
            ),
            "overscan: clipped mean (3 sigma, 5 iter)": lambda: subtract_overscan(
                raw, layout, OverscanConfig(method="clipped_mean")
            ),
            "trim + assemble (2 amps)": lambda: assemble(sub, layout),
            "gain (ADU -> e-)": lambda: apply_gain(trimmed, layout),
            "initial variance": lambda: initial_variance(electrons, layout),
            "bias (sci + var)": lambda: subtract_bias(electrons, var, bias),
            "dark, scaled (sci + var)": lambda: subtract_dark(b_sci, b_var, dark, exptime),
            "flat, min_value (sci + var + mask)": lambda: divide_flat(d_sci, d_var, flat, min_value=0.1),
            "whole chain, raw -> flat-fielded": chain,
        }
        best = {name: float("inf") for name in steps}
        cpu = {name: float("inf") for name in steps}
        for _ in range(args.repeat):
            for name, build in steps.items():
                graph = build()
                c, t = time.process_time(), time.perf_counter()
                dask.persist(graph)
                best[name] = min(best[name], time.perf_counter() - t)
                cpu[name] = min(cpu[name], time.process_time() - c)

    print()
    print(
        f"large chip: raw {layout.raw_shape[0]}x{layout.raw_shape[1]}, data {ny}x{nx} "
        f"({mpix:.2f} Mpix), chunks of {rows} whole rows, threaded scheduler with "
        f"{args.threads} threads, best of {args.repeat}; Python {platform.python_version()}, "
        f"numpy {np.__version__}, dask {dask.__version__}"
    )
    print()
    print("| step | best wall time (ms) | Mpix/s (wall) | best CPU time (ms) | Mpix per CPU-s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, t in best.items():
        print(f"| {name} | {t * 1e3:.0f} | {mpix / t:.0f} | {cpu[name] * 1e3:.0f} | {mpix / cpu[name]:.0f} |")


if __name__ == "__main__":
    main()
