"""Graph construction for a survey night, without pixels.

Builds every stage's graph of a night of N exposures of a C-chip mosaic from a synthetic
catalogue (headers only: no file is read, nothing computes), the way ``ccdask.night._reduce.reduce``
builds them stage by stage, and reports construction time and tasks per chip-frame:

- masters: per chip-frame one calibrate task, then per chip a tile-by-tile stack of the
  calibrated frames read back from the scratch stores (which do not exist: nothing reads them)
  and its writes into the master cache (prepared, metadata only, as the runner does);
- science: per chip-frame one task, per exposure one assembling task, with the masters read
  back from the cache (stand-ins with the cache's chunks), and the masters' FITS files that the
  runner writes in the same stage.

"Materialised" is the time to turn the built collections into the optimised task graph, as the
runner does before computing each stage (:func:`ccdask.night._stages.stage_graph`).

    .venv/bin/python benchmarks/bench_graph.py --exposures 500 --chips 62
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
from astropy.io import fits

from ccdask.cache import MasterCache, master_key
from ccdask.calibrate import ChipMasters
from ccdask.catalog import Catalog, Entry
from ccdask.config import ReduceConfig
from ccdask.frame import Master
from ccdask.io import HduInfo
from ccdask.night._masters import calibrate_frames, stack_master
from ccdask.night._plan import make_plan
from ccdask.night._products import master_outputs
from ccdask.night._science import science_graph
from ccdask.night._stages import NightMasters, pack_masters, stage_graph
from ccdask.profiles import load_profile


def chip_header(ny: int, nx: int, nover: int) -> fits.Header:
    h = fits.Header()
    half = nx // 2
    h["DATASECA"] = f"[{nover + 1}:{nover + half},1:{ny}]"
    h["DATASECB"] = f"[{nover + half + 1}:{nover + nx},1:{ny}]"
    h["BIASSECA"] = f"[1:{nover},1:{ny}]"
    h["BIASSECB"] = f"[{nover + nx + 1}:{2 * nover + nx},1:{ny}]"
    for a in "AB":
        h[f"GAIN{a}"] = 1.5
        h[f"RDNOISE{a}"] = 5.0
        h[f"SATURAT{a}"] = 60000.0
    return h


def synthetic_catalog(root: Path, *, exposures: int, chips: int, ny: int, nx: int) -> Catalog:
    """20 biases, 10 darks, 10 flats in each of g and r, the rest science, alternating filters."""
    nover = 32
    kinds = ["bias"] * 20 + ["dark"] * 10 + ["flat-g"] * 10 + ["flat-r"] * 10
    kinds += [("science-g" if i % 2 else "science-r") for i in range(exposures - len(kinds))]
    base = chip_header(ny, nx, nover)
    layouts = {}
    entries = []
    for i, kind in enumerate(kinds):
        typ, _, filt = kind.partition("-")
        path = str(root / f"{kind}_{i:04d}.fits")
        for c in range(chips):
            chip = f"CCD{c + 1:02d}"
            if chip not in layouts:
                layouts[chip] = load_profile("generic").chip_layout(base, (ny, nx + 2 * nover), chip=chip)
            info = HduInfo(
                path=path,
                index=c + 1,
                extname=chip,
                extver=None,
                header=base,
                shape=(ny, nx + 2 * nover),
                bitpix=16,
                bzero=32768.0,
                bscale=1.0,
                blank=None,
                kind="plain",
                data_offset=2880 * (2 + c),
                size=10**9,
                mtime_ns=i,
            )
            exptime = {"bias": 0.0, "dark": 300.0, "flat": 5.0}.get(typ, 120.0)
            entries.append(
                Entry(
                    path=path,
                    hdu=c + 1,
                    extname=chip,
                    chip=chip,
                    imagetyp=typ,
                    label=typ,
                    exptime=exptime,
                    filter=filt or None,
                    date=None,
                    object=None,
                    shape=info.shape,
                    dtype="uint16",
                    kind="plain",
                    profile="generic",
                    layout=layouts[chip],
                    size=info.size,
                    mtime_ns=i,
                    header=base,
                    info=info,
                )
            )
    return Catalog(entries)


MATERIALISE: dict[str, float] = {}


def _ntasks(collections, stage: str = "") -> int:
    """Tasks of the collections' graph, materialised as the runner does before computing (timed)."""
    t = time.perf_counter()
    n = len(stage_graph(list(collections)))
    MATERIALISE[stage] = MATERIALISE.get(stage, 0.0) + time.perf_counter() - t
    return n


def _rss_mib() -> float:
    """This process's peak resident memory so far (MiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exposures", type=int, default=500)
    ap.add_argument("--chips", type=int, default=62)
    ap.add_argument("--ny", type=int, default=4096)
    ap.add_argument("--nx", type=int, default=2048)
    args = ap.parse_args()
    cfg = ReduceConfig()
    shape = (args.ny, args.nx)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cat = synthetic_catalog(root, exposures=args.exposures, chips=args.chips, ny=args.ny, nx=args.nx)
        rss_catalog = _rss_mib()
        t0 = time.perf_counter()
        plan = make_plan(cat, cfg)
        t_plan = time.perf_counter() - t0

        def cached(kind: str, chip: str, filt: str | None = None) -> Master:
            z = da.zeros(shape, dtype=np.float32, chunks=(1024, 1024))  # the cache's chunks
            return Master(
                kind=kind,
                chip=chip,
                data=z + 0,
                variance=z + 1,
                count=None,
                ncombine=10,
                filter=filt,
                meta={"cache_key": dask.base.tokenize(kind, chip, filt)},
            )

        counts, times = {}, {}
        store = MasterCache(root / "cache.zarr")  # entries are prepared (metadata only), never written
        biases = {c: cached("bias", c) for c in plan.chips}
        darks = {c: cached("dark", c) for c in plan.chips}
        stages = {
            "bias": ({c: cp.biases for c, cp in plan.chips.items()}, {}, cfg.bias.combine),
            "dark": (
                {c: cp.darks for c, cp in plan.chips.items()},
                {c: pack_masters(ChipMasters(bias=biases[c]), c) for c in plan.chips},
                cfg.dark.combine,
            ),
        }
        for filt in ("g", "r"):
            stages[f"flat-{filt}"] = (
                {c: cp.flats[filt] for c, cp in plan.chips.items()},
                {c: pack_masters(ChipMasters(bias=biases[c], dark=darks[c]), c) for c in plan.chips},
                cfg.flat.combine,
            )
        for stage, (entries, packed, ccfg) in stages.items():
            t = time.perf_counter()
            cal = calibrate_frames(
                stage.split("-")[0],
                entries,
                cfg,
                root / "scratch",
                masters=packed,
                combine_cfg=ccfg,
                rate=stage == "dark",
            )
            kind = stage.split("-")[0]
            flat = stage.startswith("flat")
            writes = []
            for c, rows in cal.arrays.items():
                # flats are divided by each exposure's focal-plane median (known after step 1)
                m = stack_master(kind, c, rows, ccfg, divisors=[1.0] * len(rows) if flat else None)
                key = master_key(kind, [e.identity for e, _, _ in rows], {"stage": stage}, chip=c)
                writes.append(store.store_graph(key, m).writes)  # as the runner: stack and write
            times[stage] = time.perf_counter() - t
            counts[stage] = _ntasks(cal.tasks, stage) + _ntasks(writes, stage)
        flats = {f: {c: cached("flat", c, f) for c in plan.chips} for f in ("g", "r")}
        t = time.perf_counter()
        masters = NightMasters(bias=biases, dark=darks, flats=flats)
        sci = science_graph(plan, cfg, root / "reduced", masters, thumb_factor=8)
        files = master_outputs(root, masters, cfg, 8)  # the masters' FITS files go with the science stage
        times["science"] = time.perf_counter() - t
        counts["science"] = _ntasks([*sci.tasks, *[f.task for f in files if f.task is not None]], "science")
    chip_frames = args.exposures * args.chips
    total = sum(counts.values())
    build = sum(times.values())
    print(
        f"night: {args.exposures} exposures x {args.chips} chips of {args.ny}x{args.nx} "
        f"({chip_frames} chip-frames, {len(plan.exposures) * args.chips} science)"
    )
    print(f"plan: {t_plan:.1f} s; client peak RSS {_rss_mib():.0f} MiB (catalogue {rss_catalog:.0f} MiB)")
    for stage in counts:
        print(
            f"  {stage:<8} {counts[stage]:>8} tasks, built in {times[stage]:6.1f} s, "
            f"materialised in {MATERIALISE.get(stage, 0.0):6.1f} s"
        )
    mat = sum(MATERIALISE.values())
    print(
        f"graph construction {build:.1f} s (+ {mat:.1f} s materialising = {build + mat:.1f} s); "
        f"{total} tasks, {total / chip_frames:.2f} per chip-frame"
    )


if __name__ == "__main__":
    main()
