"""Combining speed and memory: ccdask vs ccdproc.combine vs astropy sigma_clip vs a streaming mean.

Frames: ``--frames`` (default 30, and up to 48 for the memory runs) uint16 frames of ``--shape``
(default 4096 × 2048, stored as int16 + BZERO = 32768 like a camera writes them), a bias-like
level of 1000 ADU with 5 ADU read noise, a column pattern and 0.05 % cosmic-ray hits. They are
written once into ``--dir`` (default ``benchmarks/_data/combine``, git-ignored) and reused.

Sections (``--sections``, default all):

``speed``
    one process, the same files, warm page cache:
    (a) ccdask, ccdproc's parameters (sigma 3/3, one iteration, mean center, std spread) — checked
        bit-identical to ccdproc after casting ccdproc's float64 to float32;
    (b) ccdask defaults (median center, MAD spread, up to 5 iterations);
    (c) ``ccdproc.combine(paths, method="average", sigma_clip=True)`` (it clips once);
    (d) astropy: read all frames, ``sigma_clip(axis=0)`` with ccdask's defaults, ``np.ma.mean``;
    (e) a streaming mean: read every frame once (same reader as ccdask), accumulate in float64.
    ccdask and the streaming mean are best of ``--repeat`` runs (round-robin); ccdproc and
    astropy run once (they take minutes and many GB).
``workers``
    ccdask defaults on the threaded scheduler with 1 and 2 threads, and on a ``LocalCluster`` of
    1 and 2 single-threaded worker processes (cluster start-up excluded).
``profile``
    one thread: CPU time of reading the tiles and of the kernel with more and more work (clip
    none; + sorting; ccdproc's parameters; defaults), to see where the time goes.
``memory``
    the ``ccdask combine`` command line on 12 and 48 frames in a subprocess; the peak of the sum
    of RSS over its whole process tree, sampled every 10 ms with psutil.

Usage::

    .venv/bin/python benchmarks/bench_combine.py [--dir DIR] [--frames 30] [--shape 4096 2048]
        [--repeat 3] [--sections speed workers memory] [--skip-slow]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

HERE = Path(__file__).resolve().parent
DEFAULT_DIR = HERE / "_data" / "combine"
MAX_FRAMES = 48


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def make_frames(folder: Path, n: int, shape: tuple[int, int]) -> list[Path]:
    """Write ``n`` bias-like uint16 frames (once; existing files of the right shape are kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    ny, nx = shape
    paths = []
    columns = np.random.default_rng(0).normal(0, 2, nx)
    for i in range(n):
        path = folder / f"bias_{ny}x{nx}_{i:03d}.fits"
        paths.append(path)
        if path.exists():
            continue
        rng = np.random.default_rng(1000 + i)
        data = 1000.0 + columns[None, :] + rng.normal(0, 5, (ny, nx))
        hits = rng.random((ny, nx)) < 5e-4
        data[hits] += rng.uniform(50, 20000, hits.sum())
        hdr = fits.Header()
        hdr["IMAGETYP"] = "zero"
        hdr["EXPTIME"] = 0.0
        tmp = path.with_suffix(".tmp")
        fits.PrimaryHDU(np.clip(np.rint(data), 0, 65535).astype(np.uint16), header=hdr).writeto(tmp, overwrite=True)
        os.replace(tmp, path)
    return paths


def warm(paths: list[Path]) -> None:
    """Read every file once so all methods see a warm page cache."""
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(1 << 24):
                pass


# ---------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------
CCDPROC_PARAMS = dict(maxiters=1, center="mean", spread="std")


def run_ccdask(paths, scheduler="threads", num_workers=None, **params):
    from ccdask.combine import combine

    res = combine(paths, **params)
    kw = {"scheduler": scheduler}
    if num_workers is not None:
        kw["num_workers"] = num_workers
    return res.compute(**kw)


def run_streaming_mean(paths):
    from ccdask.io import image_source

    acc = None
    for p in paths:
        src = image_source(p)
        frame = src.read(slice(None), slice(None))
        if acc is None:
            acc = np.zeros(frame.shape, np.float64)
        acc += frame
    return (acc / len(paths)).astype(np.float32)


def run_ccdproc(paths):
    import ccdproc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ccdproc.combine([str(p) for p in paths], method="average", sigma_clip=True, unit="adu")


def run_astropy(paths):
    from astropy.stats import sigma_clip

    stack = np.stack([fits.getdata(p).astype(np.float32) for p in paths])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clipped = sigma_clip(stack, axis=0, sigma=3, maxiters=5, cenfunc="median", stdfunc="mad_std", copy=False)
        return np.ma.mean(clipped, axis=0).filled(np.nan).astype(np.float32)


CPU: dict[str, float] = {}  # CPU seconds (all threads of this process) of the best run


def best_of(fns: dict[str, callable], repeat: int) -> dict[str, float]:
    """Best wall time of each method, run round-robin ``repeat`` times (CPU time kept in CPU)."""
    out = {k: float("inf") for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            dt = time.perf_counter() - t0
            if dt < out[k]:
                out[k] = dt
                CPU[k] = time.process_time() - c0
    return out


def timed(name, fn):
    t0, c0 = time.perf_counter(), time.process_time()
    value = fn()
    CPU[name] = time.process_time() - c0
    return time.perf_counter() - t0, value


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------
def section_speed(paths, repeat, skip_slow):
    warm(paths)
    n = len(paths)
    run_ccdask(paths[:3])  # load the compiled kernel (numba cache) once
    times = best_of(
        {
            "ccdask, ccdproc's parameters": lambda: run_ccdask(paths, **CCDPROC_PARAMS),
            "ccdask, defaults (median/MAD, ≤5 iterations)": lambda: run_ccdask(paths),
            "streaming mean (read every byte once)": lambda: run_streaming_mean(paths),
        },
        repeat,
    )
    if not skip_slow:
        t, ref = timed("ccdproc.combine (clips once)", lambda: run_ccdproc(paths))
        times["ccdproc.combine (clips once)"] = t
        ours = run_ccdask(paths, **CCDPROC_PARAMS)
        same = np.array_equal(ours.data, ref.data.astype(np.float32))
        print(f"ccdask (ccdproc's parameters) bit-identical to ccdproc after float32 cast: {same}")
        del ref
        name = "astropy sigma_clip + mean (defaults of ccdask)"
        t, ref = timed(name, lambda: run_astropy(paths))
        times[name] = t
        ours = run_ccdask(paths)
        print("ccdask defaults vs astropy: max |diff| =", float(np.nanmax(np.abs(ours.data - ref))))
        del ref
    stream = times["streaming mean (read every byte once)"]
    fast = times["ccdask, ccdproc's parameters"]
    print(f"\n### speed: {n} frames of {paths_shape(paths)}\n")
    print("| method | wall (s) | CPU (s) | wall vs streaming mean | ccdproc / this (wall) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    cp = times.get("ccdproc.combine (clips once)")
    for k, t in times.items():
        ratio = f"{cp / t:.1f}" if cp else "-"
        print(f"| {k} | {t:.2f} | {CPU.get(k, float('nan')):.2f} | {t / stream:.2f} | {ratio} |")
    return times, fast


def calibration(repeat):
    """Speed-up the machine gives right now to two independent CPU-bound threads (the kernel on
    two in-memory blocks), i.e. the best any scheduler could do on 2 cores at this moment."""
    from concurrent.futures import ThreadPoolExecutor

    from ccdask.combine import combine_block

    rng = np.random.default_rng(0)
    blocks = [rng.normal(1000, 5, (30, 160, 2048)).astype(np.float32) for _ in range(2)]
    combine_block(blocks[0][:, :2])

    def serial():
        for b in blocks:
            combine_block(b)

    def parallel():
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(combine_block, blocks))

    t = best_of({"cal1": serial, "cal2": parallel}, repeat)
    return t["cal1"] / t["cal2"]


def section_workers(paths, repeat):
    warm(paths)
    from distributed import Client, LocalCluster

    cal = calibration(repeat)
    fns = {
        "threads, 1 worker": lambda: run_ccdask(paths, num_workers=1),
        "threads, 2 workers": lambda: run_ccdask(paths, num_workers=2),
    }
    times = best_of(fns, repeat)
    for nw in (1, 2):
        with (
            LocalCluster(n_workers=nw, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
            Client(cluster, set_as_default=False) as client,
        ):
            run_ccdask(paths[:3], scheduler=client)  # warm the workers (imports, numba cache)
            times[f"LocalCluster, {nw} process(es)"] = best_of(
                {"x": lambda c=client: run_ccdask(paths, scheduler=c)}, repeat
            )["x"]
    print(f"\n### workers: {len(paths)} frames, ccdask defaults\n")
    print(
        f"(calibration: two independent kernel threads run {cal:.2f}x faster than one after "
        "the other on this machine right now)\n"
    )
    print("| scheduler | time (s) | speed-up vs 1 |")
    print("| --- | ---: | ---: |")
    base = {"threads": times["threads, 1 worker"], "LocalCluster": times["LocalCluster, 1 process(es)"]}
    for k, t in times.items():
        b = base["threads" if k.startswith("threads") else "LocalCluster"]
        print(f"| {k} | {t:.2f} | {b / t:.2f} |")
    return times


def section_profile(paths):
    """Where one thread's CPU time goes: reading the tiles, then the kernel's phases."""
    warm(paths)
    from ccdask.combine import CombineConfig, combine_block, tile_shape
    from ccdask.io import image_source

    srcs = [image_source(p) for p in paths]
    ny, nx = srcs[0].shape
    ty, tx = tile_shape(len(srcs), (ny, nx))
    combine_block(np.zeros((len(srcs), 1, 8), np.float32))
    configs = {
        "kernel, clip none, mean (fill + survivors + mean)": CombineConfig(clip="none"),
        "kernel, clip none, median (+ sorting network)": CombineConfig(clip="none", method="median"),
        "kernel, ccdproc's parameters (mean/std, 1 iteration)": CombineConfig(maxiters=1, center="mean", spread="std"),
        "kernel, defaults (+ median/MAD iterations)": CombineConfig(),
    }
    cpu = dict.fromkeys(["read tiles (ImageSource.read, 30 frames)", *configs], 0.0)
    for y0 in range(0, ny, ty):
        rows = slice(y0, min(y0 + ty, ny))
        t = time.thread_time()
        block = np.empty((len(srcs), rows.stop - rows.start, nx), np.float32)
        for i, src in enumerate(srcs):
            block[i] = src.read(rows, slice(0, nx))
        cpu["read tiles (ImageSource.read, 30 frames)"] += time.thread_time() - t
        for name, cfg in configs.items():
            t = time.thread_time()
            combine_block(block, cfg)
            cpu[name] += time.thread_time() - t
    npix = ny * nx
    print(f"\n### profile: one thread, {len(srcs)} frames, tiles of {ty}×{tx}\n")
    print("| step | CPU (s) | ns per output pixel |")
    print("| --- | ---: | ---: |")
    for name, t in cpu.items():
        print(f"| {name} | {t:.2f} | {t / npix * 1e9:.0f} |")
    return cpu


def peak_rss_of(cmd: list[str], interval: float = 0.01) -> tuple[float, float, int]:
    """Run ``cmd``; peak of the summed RSS of its process tree (bytes), wall time, exit code."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        total = 0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        peak = max(peak, total)
        time.sleep(interval)
    err = proc.stderr.read().decode()
    if proc.returncode:
        print(err, file=sys.stderr)
    return peak, time.perf_counter() - t0, proc.returncode


def section_memory(paths, out_dir: Path):
    warm(paths)
    exe = [sys.executable, "-c", "import sys; from ccdask.cli import main; sys.exit(main())"]
    rows = []
    base_peak, _, _ = peak_rss_of([*exe, "--version"])
    for n in (12, MAX_FRAMES):
        out = out_dir / f"master_{n}.fits"
        peak, wall, rc = peak_rss_of([*exe, "combine", *map(str, paths[:n]), "-o", str(out), "--overwrite"])
        rows.append((n, peak, wall, rc))
    print("\n### memory: `ccdask combine` process tree, peak RSS\n")
    print(f"(interpreter + imports alone, `ccdask --version`: {base_peak / 2**20:.0f} MiB)\n")
    print("| frames | input (MiB) | peak RSS (MiB) | wall (s) | vs 12 frames |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n, peak, wall, rc in rows:
        size = sum(os.path.getsize(p) for p in paths[:n]) / 2**20
        print(
            f"| {n} | {size:.0f} | {peak / 2**20:.0f} | {wall:.1f} | "
            f"{peak / rows[0][1]:.2f} |" + ("" if rc == 0 else " FAILED")
        )
    return rows


def paths_shape(paths):
    with fits.open(paths[0]) as hdul:
        return "×".join(map(str, hdul[0].shape))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where the frames are written")
    ap.add_argument("--frames", type=int, default=30, help="frames for speed/workers")
    ap.add_argument("--shape", type=int, nargs=2, default=(4096, 2048), metavar=("NY", "NX"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--sections",
        nargs="+",
        default=["speed", "workers", "memory", "profile"],
        choices=["speed", "workers", "memory", "profile"],
    )
    ap.add_argument("--skip-slow", action="store_true", help="skip ccdproc and astropy")
    args = ap.parse_args(argv)
    nmax = max(args.frames, MAX_FRAMES if "memory" in args.sections else 0)
    t0 = time.perf_counter()
    paths = make_frames(args.dir, nmax, tuple(args.shape))
    print(
        f"{nmax} frames ready in {args.dir} ({time.perf_counter() - t0:.0f} s); "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    if "speed" in args.sections:
        section_speed(paths[: args.frames], args.repeat, args.skip_slow)
    if "workers" in args.sections:
        section_workers(paths[: args.frames], args.repeat)
    if "memory" in args.sections:
        section_memory(paths, args.dir)
    if "profile" in args.sections:
        section_profile(paths[: args.frames])
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
