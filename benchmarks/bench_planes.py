"""Stacking reduced frames with their planes: cost of DQ/VAR inputs and optional outputs, memory in N.

Frames: ``--frames`` ccdask-reduced files of ``--shape`` (one chip: SCI and VAR float32, DQ
uint16 with 3 % cosmic rays flagged, a saturated star), written once into ``--dir`` (default
``benchmarks/_data/planes``, git-ignored).

``speed`` (in process, warm page cache, best of ``--repeat``, round-robin):
    (0) read floor: every byte of the SCI, VAR and DQ planes read once (``ImageSource.read``);
    (a) SCI alone, ccdask defaults (sigma clipping, median/MAD);
    (b) + ``variance="VAR", dq="DQ"`` (masking, quadrature variance);
    (c) + ``clip="varclip"``;
    (d) + ``weights="ivar"``;
    (e) (b) + the NREJ, SIGMA and REJMASK planes;
    each computes data, count and every plane it has.
``memory``:
    ``ccdask combine`` on 12 and ``--frames`` files with ``--nrej --sigma --rejmask`` (the
    REJMASK cube is N × ny × nx bytes), in a subprocess; the peak RSS of its process tree (psutil,
    every 10 ms). The out-of-core writer should keep it flat in N.

Usage::

    .venv/bin/python benchmarks/bench_planes.py [--frames 48] [--shape 1024 2048] [--repeat 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_combine import peak_rss_of  # noqa: E402

DEFAULT_DIR = HERE / "_data" / "planes"


def make_frames(folder: Path, n: int, shape: tuple[int, int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"red{i:02d}.fits"
        paths.append(path)
        if path.exists():
            with fits.open(path) as hdul:
                if hdul["SCI"].shape == shape:
                    continue
        var = rng.uniform(90.0, 110.0, shape).astype(np.float32)
        sci = (1000.0 + rng.standard_normal(shape, np.float32) * 10.0).astype(np.float32)
        dq = np.zeros(shape, np.uint16)
        hit = rng.random(shape) < 0.03
        sci[hit] += 2000.0
        dq[hit] = 4
        sci[100:110, 200:210] = 60000.0
        dq[100:110, 200:210] = 2
        hdus = [fits.PrimaryHDU()]
        for name, plane in (("SCI", sci), ("VAR", var), ("DQ", dq)):
            hdu = fits.ImageHDU(plane, name=name)
            hdu.header["EXTVER"] = 1
            hdus.append(hdu)
        fits.HDUList(hdus).writeto(path, overwrite=True)
    return paths


def speed(paths: list[Path], repeat: int) -> None:
    import dask

    from ccdask.combine import combine
    from ccdask.io import image_source

    sources = [image_source(p, (ext, 1)) for p in paths for ext in ("SCI", "VAR", "DQ")]

    def floor() -> None:
        for src in sources:
            src.read(slice(None), slice(None))

    sci = dict(hdu=("SCI", 1))
    planes = dict(hdu=("SCI", 1), variance="VAR", dq="DQ")
    outputs = dict(nrej_plane=True, sigma_plane=True, rejmask_cube=True)
    cases = {
        "(0) read floor: SCI, VAR, DQ once": None,
        "(a) SCI alone, sigma clipping": sci,
        "(b) + VAR, DQ (masked, quadrature variance)": planes,
        "(c) + varclip": {**planes, "clip": "varclip"},
        "(d) + weights=ivar": {**planes, "weights": "ivar"},
        "(e) (b) + NREJ, SIGMA, REJMASK": {**planes, **outputs},
    }
    best = dict.fromkeys(cases, np.inf)

    def run(opts: dict | None) -> None:
        if opts is None:
            floor()
            return
        res = combine(paths, **opts)
        dask.compute(res.data, res.count, res.variance, res.dq, res.nrej, res.sigma, res.rejmask)

    for opts in cases.values():  # warm up: numba compiles, page cache
        run(opts)
    for _ in range(repeat):
        for label, opts in cases.items():
            t0 = time.perf_counter()
            run(opts)
            best[label] = min(best[label], time.perf_counter() - t0)
    base = best["(a) SCI alone, sigma clipping"]
    floor_t = best["(0) read floor: SCI, VAR, DQ once"]
    print(f"\n### speed: {len(paths)} frames of {image_source(paths[0], ('SCI', 1)).shape}, best of {repeat}\n")
    print("| case | seconds | vs (a) | vs read floor |")
    print("| --- | ---: | ---: | ---: |")
    for label, t in best.items():
        print(f"| {label} | {t:.3f} | {t / base:.2f} | {t / floor_t:.2f} |")


def memory(paths: list[Path], out_dir: Path) -> None:
    exe = [sys.executable, "-c", "import sys; from ccdask.cli import main; sys.exit(main())"]
    base_peak, _, _ = peak_rss_of([*exe, "--version"])
    rows = []
    for n in sorted({12, len(paths)}):
        out = out_dir / f"planes{n}.fits"
        cmd = [*exe, "combine", *map(str, paths[:n]), "-o", str(out), "--overwrite", "--nrej", "--sigma", "--rejmask"]
        peak, wall, rc = peak_rss_of(cmd)
        rows.append((n, peak, wall, rc, out.stat().st_size if out.exists() else 0))
    print("\n### memory: `ccdask combine --nrej --sigma --rejmask`, process tree peak RSS\n")
    print(f"(`ccdask --version` alone: {base_peak / 2**20:.0f} MiB)\n")
    print("| frames | peak RSS (MiB) | output file (MiB) | wall (s) | exit |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n, peak, wall, rc, size in rows:
        print(f"| {n} | {peak / 2**20:.0f} | {size / 2**20:.0f} | {wall:.1f} | {rc} |")
    if len(rows) == 2:
        print(f"\npeak ratio {rows[1][0]} / {rows[0][0]} frames: {rows[1][1] / rows[0][1]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--shape", type=int, nargs=2, default=(1024, 2048))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sections", nargs="+", default=["speed", "memory"])
    args = ap.parse_args()
    paths = make_frames(args.dir, args.frames, tuple(args.shape))
    if "speed" in args.sections:
        speed(paths[: min(24, len(paths))], args.repeat)
    if "memory" in args.sections:
        memory(paths, args.dir)
    subprocess.run(["uptime"], check=False)


if __name__ == "__main__":
    main()
