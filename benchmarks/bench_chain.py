"""The night's per-chip task: the numpy chain against the dask chain computed on one block.

A science chip-frame of the night is calibrated by one task. Before issue 10 that task built the
dask graph of :func:`ccdask.calibrate.process` on a one-block array and computed it with the
synchronous scheduler; now :func:`ccdask.calibrate.process_in_memory` runs the numpy form of
every step. Both are timed here in the same process, on the same ``large`` simulated chip
(4096 x 2048 data pixels, two amplifiers with serial overscans, raw 4096 x 2112 uint16, read into
memory once), with the simulator's truth as bias, dark and flat masters, round-robin
``--repeat`` times (best kept), for two configurations: the arithmetic chain alone (cosmic rays
off) and the default chain (LACosmic on). Peak memory of each (``tracemalloc``, numpy buffers
included) is reported too. The outputs are compared before anything is timed: VAR and DQ must be
equal; SCI is equal except, with LACosmic, at cosmic-ray pixels with no usable pixel in their
5x5 cleaning box, which astroscrappy fills with the median of the image it is given: the whole
chip in the numpy chain, one amplifier's chunk (plus halo) in the dask chain (see
``ccdask.calibrate._cosmics``). Their number is printed.

Usage::

    .venv/bin/python benchmarks/bench_chain.py [--dir DIR] [--repeat 5]
"""

from __future__ import annotations

import argparse
import platform
import time
import tracemalloc
from pathlib import Path

import dask
import dask.array as da
import numpy as np

from bench_steps import DEFAULT_DIR, make_night  # the same large chip, made once for both
from ccdask.calibrate import ChipMasters, ProcessConfig, process, process_in_memory
from ccdask.calibrate._cosmics import CosmicConfig
from ccdask.catalog import Catalog
from ccdask.frame import Master


def _masters(layout) -> dict:
    """Bias, dark rate and flat of plausible levels (their values do not change the cost)."""
    shape = layout.trimmed_shape
    rng = np.random.default_rng(0)
    bias = (rng.normal(0.0, 1.0, shape).astype(np.float32), np.full(shape, 0.2, np.float32))
    dark = (np.full(shape, 0.01, np.float32), np.full(shape, 1e-5, np.float32))
    flat = (rng.uniform(0.97, 1.03, shape).astype(np.float32), np.full(shape, 1e-6, np.float32))
    return {"bias": bias, "dark": dark, "flat": flat, "bias_label": "bias", "dark_label": "dark", "flat_label": "flat"}


def _dask_chain(raw, mem, cfg, layout):
    def master(kind):
        data, var = mem[kind]
        return Master(
            kind=kind,
            chip=layout.name,
            data=da.from_array(data, chunks=-1),
            variance=da.from_array(var, chunks=-1),
            count=None,
            ncombine=0,
            meta={"label": mem[f"{kind}_label"]},
        )

    frame = process(
        da.from_array(raw, chunks=-1),
        ChipMasters(master("bias"), master("dark"), master("flat")),
        cfg,
        layout=layout,
        exptime=120.0,
        role="science",
    )
    return dask.compute(frame.sci, frame.var, frame.dq, scheduler="sync")


def _numpy_chain(raw, mem, cfg, layout):
    return process_in_memory(raw, mem, cfg, layout=layout, exptime=120.0, role="science")[:3]


def _measure(fn, *args):
    tracemalloc.start()
    t0 = time.perf_counter()
    c0 = time.process_time()
    fn(*args)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return wall, cpu, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    night = make_night(args.dir)
    (entry,) = Catalog.scan(night.files["science"]).entries
    layout = entry.layout
    raw = entry.source.read(slice(None), slice(None))
    mem = _masters(layout)
    npix = layout.trimmed_shape[0] * layout.trimmed_shape[1]
    print(
        f"chip {layout.name}: raw {raw.shape}, data {layout.trimmed_shape} ({npix / 1e6:.2f} Mpix); "
        f"{platform.python_version()}, numpy {np.__version__}, dask {dask.__version__}"
    )
    configs = {
        "arithmetic (cosmics off)": ProcessConfig(cosmics=CosmicConfig(method="none")),
        "default (LACosmic)": ProcessConfig(),
    }
    for label, cfg in configs.items():
        ref = _dask_chain(raw, mem, cfg, layout)
        got = _numpy_chain(raw, mem, cfg, layout)
        np.testing.assert_array_equal(ref[1], got[1])
        np.testing.assert_array_equal(ref[2], got[2])
        differ = ref[0] != got[0]
        lonely = (got[2] & 4) != 0  # DQ cosmic
        assert np.all(lonely[differ]), "SCI differs outside cosmic-ray pixels"
        best = {"dask": [np.inf, np.inf, 0], "numpy": [np.inf, np.inf, 0]}
        repeat = args.repeat if "off" in label else max(1, args.repeat // 2)
        for _ in range(repeat):
            for name, fn in (("dask", _dask_chain), ("numpy", _numpy_chain)):
                wall, cpu, peak = _measure(fn, raw, mem, cfg, layout)
                b = best[name]
                b[0], b[1], b[2] = min(b[0], wall), min(b[1], cpu), max(b[2], peak)
        d, n = best["dask"], best["numpy"]
        print(
            f"\n{label}, best of {repeat}; SCI pixels differing (cleaned cosmic rays with no "
            f"good neighbour): {int(differ.sum())}"
        )
        print("| chain | wall (s) | CPU (s) | peak traced memory (MiB) | bytes per data pixel |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, b in (("dask graph, one block, sync", d), ("numpy (process_in_memory)", n)):
            print(f"| {name} | {b[0]:.3f} | {b[1]:.3f} | {b[2] / 2**20:.0f} | {b[2] / npix:.1f} |")
        print(f"numpy / dask: wall {n[0] / d[0]:.2f}, CPU {n[1] / d[1]:.2f}, memory {n[2] / d[2]:.2f}")


if __name__ == "__main__":
    main()
