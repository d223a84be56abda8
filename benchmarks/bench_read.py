"""Read throughput: ``cat``, astropy's eager read, and ccdask's chunked lazy read of one frame.

Writes a uint16 frame (stored as int16 with BZERO = 32768, as cameras and astropy do) and times:

(a) ``cat FILE > /dev/null`` in a subprocess (the page-cache / disk ceiling),
(b) ``astropy.io.fits.getdata(FILE).astype(float32)`` (the usual eager read),
(c) ``ccdask.io.open_frame(FILE, chunks=...)`` on the threaded scheduler, both chunk by chunk
    (``dask.compute`` of the blocks, as a downstream task would consume them) and assembled into
    one array with ``.compute()`` (which adds dask's final concatenation/copy),

checking that (c) is bit-identical to (b). Each is run once to warm the page cache, then all
are run round-robin ``--repeat`` times; the best time of each is reported as MB/s of file bytes
(1 MB = 1e6 bytes), with ratios to ``cat`` and to astropy.

Usage::

    .venv/bin/python benchmarks/bench_read.py [--dir DIR] [--shape 4096 2048] [--repeat 15]
                                              [--chunk-rows 0 512]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dask
import numpy as np
from astropy.io import fits

from ccdask.io import default_chunks, open_frame


def best_times(methods: list[tuple[str, str, Callable[[], object]]], repeat: int) -> tuple[list[float], list[object]]:
    """Warm each method up once, then time them round-robin ``repeat`` times; best of each.

    Interleaving the methods spreads any background load on a shared machine evenly over them,
    so the ratios stay meaningful even when absolute times are noisy.
    """
    results = [fn() for _, _, fn in methods]
    best = [float("inf")] * len(methods)
    for _ in range(repeat):
        for k, (_, _, fn) in enumerate(methods):
            t0 = time.perf_counter()
            results[k] = fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best, results


def same_bits(out: np.ndarray, ref: np.ndarray) -> bool:
    """Whether ccdask's float32 result is bit-identical to astropy's (reports if not)."""
    if out.dtype == ref.dtype and np.array_equal(out.view(np.uint32), ref.view(np.uint32)):
        return True
    print("ERROR: ccdask result differs from astropy", file=sys.stderr)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write the test frame (default: a temporary directory)"
    )
    parser.add_argument(
        "--shape", type=int, nargs=2, default=(4096, 2048), metavar=("NY", "NX"), help="frame shape (default 4096 2048)"
    )
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per method")
    parser.add_argument(
        "--chunk-rows",
        type=int,
        nargs="+",
        default=[0, 512],
        help="ccdask chunk heights to try (whole rows); 0 = default chunks",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="threads for the threaded scheduler (default: dask's)"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench_uint16.fits"
        rng = np.random.default_rng(0)
        data = rng.integers(0, 65536, size=tuple(args.shape), dtype=np.uint16)
        fits.PrimaryHDU(data).writeto(path)
        del data
        nbytes = os.path.getsize(path)

        methods: list[tuple[str, str, Callable[[], object]]] = [
            ("cat > /dev/null", "-", lambda: subprocess.run(["cat", str(path)], check=True, stdout=subprocess.DEVNULL)),
            ("astropy getdata → float32", "whole frame", lambda: fits.getdata(path).astype(np.float32)),
        ]
        for chunk_rows in args.chunk_rows:
            chunks = None if chunk_rows == 0 else (chunk_rows, -1)
            frame = open_frame(path, chunks=chunks)
            label = f"{frame.chunksize[0]}×{frame.chunksize[1]}, {frame.npartitions} task(s)"
            if chunks is None:
                label += " (default)"
            blocks = frame.to_delayed().ravel().tolist()
            methods.append(
                ("ccdask open_frame, per chunk (no assembly)", label, lambda blocks=blocks: dask.compute(*blocks))
            )
            methods.append(("ccdask open_frame `.compute()` (assembled)", label, frame.compute))

        with dask.config.set(scheduler="threads", num_workers=args.workers):
            best, results = best_times(methods, args.repeat)
        ref = results[1]
        for (name, _, _), out in zip(methods[2:], results[2:], strict=True):
            whole = np.concatenate(out, axis=0) if isinstance(out, tuple) else out
            if not same_bits(whole, ref):
                print(f"  ({name})", file=sys.stderr)
                return 1
        t_cat, t_astropy = best[0], best[1]

        ny, nx = args.shape
        print(
            f"frame {ny}×{nx} uint16 (BZERO=32768), file {nbytes / 1e6:.1f} MB, "
            f"best of {args.repeat} after a warm-up read (page cache warm), "
            f"{os.cpu_count()} CPUs; default chunks {default_chunks((ny, nx))[0][0]} rows; "
            "ccdask output bit-identical to astropy: yes"
        )
        print()
        print("| method | chunks | best time (ms) | MB/s | vs cat | vs astropy |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        for (name, chunks, _), t in zip(methods, best, strict=True):
            print(
                f"| {name} | {chunks} | {t * 1e3:.1f} | {nbytes / t / 1e6:,.0f} | "
                f"{t_cat / t:.2f} | {t_astropy / t:.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
