"""Cosmic-ray throughput: LACosmic through ``map_overlap`` vs astroscrappy on the whole frame.

Simulates one ``large`` chip (4096 x 2048 data pixels, two amplifiers) science frame of 120 s,
calibrates it eagerly with the simulator's truth (bias, gain, dark, flat: electrons), and times
on that frame:

(a) ``astroscrappy.detect_cosmics`` on the whole numpy frame (the eager reference),
(b) ``ccdask.calibrate._cosmics.detect_cosmics`` (default LACosmic, default halo) computed on dask's
    threaded scheduler with 1 or 2 threads, on tiles of ``--tile`` pixels,
(c) the median method of ccdask (``method="median"``, 5 x 5, 5 sigma),
(d) the mask steps of :mod:`ccdask.calibrate._masks` (in this process, 2 threads) on the same chip: hot
    pixels from the dark rate, dead/low pixels from the flat, saturation from the raw frame,
    interpolation of the bad pixels, the DQ plane,

each with astroscrappy's OpenMP pool limited to 1 or 2 threads (``OMP_NUM_THREADS``, which must
be set before the library loads, so every measurement runs in a fresh subprocess). The runs go
round-robin ``--rounds`` times (spreading background load evenly) and the best time of each is
kept, with the CPU time the process used (all threads; on a shared machine the wall time
depends on the load, the CPU time much less). Throughput is data megapixels per second. Every
ccdask LACosmic mask is checked equal to the whole-frame astroscrappy mask.

Usage::

    .venv/bin/python benchmarks/bench_cosmics.py [--size large] [--rounds 3] [--tile 1024]
                                                 [--masks-only]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def calibrated_frame(root: Path, size: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate one science frame and calibrate it with the truth.

    Returns the image (electrons), its variance and the pixels to ignore (the truth's hot
    pixels and dead columns, and the saturated pixels grown by 2, as ``clean_frame`` does).
    """
    from astropy.io import fits
    from scipy import ndimage

    from ccdask.sections import Section
    from ccdask.simulate._night import simulate_night

    night = simulate_night(
        root,
        chips=1,
        amps=2,
        size=size,
        nbias=0,
        ndark=0,
        nflat=0,
        filters=("r",),
        nscience=1,
        seed=3,
        science_exptime=120.0,
    )
    tr = night.truth()
    path = night.files["science"][0]
    fr = tr.frame(path.stem)
    with fits.open(path) as hdul:
        raw = hdul["CCD1"].data.astype(np.float64)
    rb = tr.array("CCD1", f"{path.stem}/row_bias")
    pattern = tr.array("CCD1", "bias_pattern")
    e = np.empty(tr.shape)
    for a, amp in enumerate(tr.meta["chips"]["CCD1"]["amps"].values()):
        c0, c1 = amp["columns"]
        e[:, c0:c1] = (raw[Section.parse(amp["datasec"]).slices] - rb[a][:, None] - pattern[:, c0:c1]) * amp["gain"]
    e -= tr.array("CCD1", "dark_rate") * fr["exptime"]
    flat = tr.array("CCD1", "flat_r")
    rn = max(a["rdnoise"] for a in tr.meta["chips"]["CCD1"]["amps"].values())
    sat = ndimage.binary_dilation(tr.array("CCD1", f"{path.stem}/saturated"), np.ones((5, 5)))
    return (
        (e / flat).astype(np.float32),
        ((np.maximum(e, 0) + rn**2) / flat**2).astype(np.float32),
        tr.array("CCD1", "bad_pixels") | sat,
    )


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(mode: str, data_dir: Path, threads: int, tile: int) -> dict:
    """One timed run in this (fresh) process; wall and CPU seconds, a digest of the mask."""
    sci = np.load(data_dir / "sci.npy")
    var = np.load(data_dir / "var.npy")
    ignore = np.load(data_dir / "mask.npy")
    if mode in ("scrappy", "scrappy-nosepmed"):
        import astroscrappy

        c0, t0 = _cpu(), time.perf_counter()
        mask, _ = astroscrappy.detect_cosmics(
            sci, inmask=ignore, invar=var, gain=1.0, readnoise=5.0, satlevel=np.inf, sepmed=(mode == "scrappy")
        )
        dt = time.perf_counter() - t0
    else:
        import dask
        import dask.array as da

        from ccdask.calibrate._cosmics import CosmicConfig, detect_cosmics

        cfg = CosmicConfig(tile=tile) if mode == "lacosmic" else CosmicConfig(method="median", tile=tile)
        x, v = da.from_array(sci, chunks=tile), da.from_array(var, chunks=tile)
        m = da.from_array(ignore, chunks=tile)
        c0, t0 = _cpu(), time.perf_counter()
        cr, _ = detect_cosmics(x, v, read_noise=5.0, mask=m, config=cfg)
        with dask.config.set(scheduler="threads", num_workers=threads):
            mask = cr.compute()
        dt = time.perf_counter() - t0
    cpu = _cpu() - c0
    digest = hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()[:16]
    return {"seconds": dt, "cpu": cpu, "digest": digest, "flagged": int(mask.sum())}


CONFIGS = [
    # (label, mode, dask threads, OpenMP threads)
    ("astroscrappy, whole frame", "scrappy", 1, 1),
    ("astroscrappy, whole frame", "scrappy", 1, 2),
    ("ccdask lacosmic, map_overlap", "lacosmic", 1, 1),
    ("ccdask lacosmic, map_overlap", "lacosmic", 2, 1),
    ("ccdask lacosmic, map_overlap", "lacosmic", 1, 2),
    ("ccdask lacosmic, map_overlap", "lacosmic", 2, 2),
    ("ccdask median 5x5, map_overlap", "median", 1, 1),
    ("ccdask median 5x5, map_overlap", "median", 2, 1),
    ("astroscrappy sepmed=False, whole frame", "scrappy-nosepmed", 1, 2),
]


def mask_steps(root: Path, rounds: int, tile: int) -> list[tuple[str, float, float]]:
    """Best wall and CPU seconds of each mask step on the night in ``root`` (2 threads)."""
    import dask
    import dask.array as da

    from ccdask.calibrate._masks import (
        build_dq,
        hot_pixels,
        interpolate_bad,
        low_pixels,
        saturation_mask,
    )
    from ccdask.catalog import Catalog
    from ccdask.io import open_frame
    from ccdask.simulate._night import SimulatedNight

    night = SimulatedNight.load(root)
    tr = night.truth()
    path = night.files["science"][0]
    entry = Catalog.scan([path], strict=True).entries[0]
    raw = open_frame(path, hdu=entry.hdu, chunks=(tile, -1)).persist(scheduler="sync")
    rate = da.from_array(tr.array("CCD1", "dark_rate"), chunks=tile)
    flat = da.from_array(tr.array("CCD1", "flat_r"), chunks=tile)
    bad_np = tr.array("CCD1", "bad_pixels")
    bad = da.from_array(bad_np, chunks=tile)
    sci = da.from_array(np.load(root.parent / "sci.npy"), chunks=tile)
    steps = [
        ("hot pixels (dark, median + 5 x 1.4826 MAD)", lambda: hot_pixels(rate)),
        ("low pixels (flat, separable 15 px median)", lambda: low_pixels(flat)),
        ("low pixels (flat, box 15 x 15 median)", lambda: low_pixels(flat, median="box")),
        ("saturation (raw ADU per amp, assemble, grow 2)", lambda: saturation_mask(raw, entry.layout, grow=2)),
        ("interpolate bad pixels (5 x 5 median)", lambda: interpolate_bad(sci, bad, 5)[0]),
        ("build DQ (4 planes)", lambda: build_dq(bad=bad, saturated=bad, cosmic=bad, nodata=bad)),
    ]
    best = {k: (float("inf"), float("inf")) for k in range(len(steps))}
    with dask.config.set(scheduler="threads", num_workers=2):
        for _ in range(rounds):
            for k, (_, build) in enumerate(steps):
                c0, t0 = _cpu(), time.perf_counter()
                build().compute()
                wall, cpu = time.perf_counter() - t0, _cpu() - c0
                best[k] = (min(best[k][0], wall), min(best[k][1], cpu))
    return [(label, *best[k]) for k, (label, _) in enumerate(steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="large", choices=("small", "medium", "large"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--masks-only", action="store_true", help="only the mask steps")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.data), args.threads, args.tile)))
        return

    with tempfile.TemporaryDirectory(prefix="bench-cosmics-") as tmp:
        tmp_path = Path(tmp)
        root = tmp_path / "night"
        sci, var, ignore = calibrated_frame(root, args.size)
        np.save(tmp_path / "sci.npy", sci)
        np.save(tmp_path / "var.npy", var)
        np.save(tmp_path / "mask.npy", ignore)
        mpix = sci.size / 1e6
        print(
            f"frame {sci.shape[0]}x{sci.shape[1]} ({mpix:.2f} Mpix), tile {args.tile}, rounds {args.rounds}", flush=True
        )
        best: dict[int, float] = {}
        best_cpu: dict[int, float] = {}
        info: dict[int, dict] = {}
        for _ in range(0 if args.masks_only else args.rounds):
            for k, (_, mode, threads, omp) in enumerate(CONFIGS):
                env = dict(os.environ, OMP_NUM_THREADS=str(omp))
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        mode,
                        "--data",
                        tmp,
                        "--threads",
                        str(threads),
                        "--tile",
                        str(args.tile),
                    ],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                res = json.loads(out.strip().splitlines()[-1])
                best[k] = min(best.get(k, float("inf")), res["seconds"])
                best_cpu[k] = min(best_cpu.get(k, float("inf")), res["cpu"])
                info[k] = res
        configs = [] if args.masks_only else CONFIGS
        reference = info[0]["digest"] if info else None
        if configs:
            print()
            print(
                "| method | dask threads | OpenMP threads | best time (s) | Mpix/s | CPU s | "
                "Mpix per CPU s | flagged px | mask = whole-frame astroscrappy |"
            )
            print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
            for k, (label, mode, threads, omp) in enumerate(configs):
                same = (
                    ("yes" if info[k]["digest"] == reference else "NO")
                    if mode == "lacosmic"
                    else ("(reference)" if mode == "scrappy" else "-")
                )
                dask_threads = "-" if mode.startswith("scrappy") else str(threads)
                print(
                    f"| {label} | {dask_threads} | {omp} | {best[k]:.2f} | {mpix / best[k]:.2f} | "
                    f"{best_cpu[k]:.2f} | {mpix / best_cpu[k]:.2f} | {info[k]['flagged']} | "
                    f"{same} |"
                )
        print()
        print("| mask step | best time (s) | Mpix/s | CPU s | Mpix per CPU s |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for label, wall, cpu in mask_steps(root, args.rounds, args.tile):
            print(f"| {label} | {wall:.3f} | {mpix / wall:.1f} | {cpu:.3f} | {mpix / cpu:.1f} |")


if __name__ == "__main__":
    main()
