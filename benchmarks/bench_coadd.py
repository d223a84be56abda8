"""Coadd speed and memory: ``ccdask coadd`` on a LocalCluster vs eager reproject + numpy.

Data: :func:`ccdask.simulate.simulate_field` fields of ``--exposures`` (default 20) dithered,
rotated exposures of a 2 × 2 mosaic, chips of ``--chip`` pixels (default 256; dithers 10 % of a
chip), written once under ``--dir`` (default ``benchmarks/_data/coadd``, git-ignored).

Sections (``--sections``, default all):

``speed``
    The same field, the same options (bilinear ``interp``, noise clipping at 4 sigma,
    inverse-variance weights), each in a fresh subprocess, round-robin, best of ``--repeat``:
    (a) ``ccdask coadd --workers 2`` (an embedded LocalCluster of 2 processes; its start-up
        included) writing the FITS file;
    (b) ``ccdask coadd`` on the threaded scheduler (2 threads);
    (c) eager: every chip reprojected whole onto the whole footprint with ``reproject_interp``
        (numpy), the planes stacked ``(N, ny, nx)``, the same noise clipping and weighted mean
        in numpy, the result written with astropy. Checked equal to (a) (SCI to 1e-5 relative).
    Peak memory of each process tree is sampled every 10 ms (psutil).
``memory``
    Peak RSS of the process tree of ``ccdask coadd --workers 2`` and of the eager reference
    against the footprint size (chips of 128, 256, 512 pixels: 4× the area each step) and the
    number of exposures (10, 20); the eager reference only up to 256-pixel chips (it needs GBs
    beyond).

Usage::

    .venv/bin/python benchmarks/bench_coadd.py [--dir DIR] [--exposures 20] [--chip 256]
        [--repeat 2] [--sections speed memory]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DIR = HERE / "_data" / "coadd"
EXE = [sys.executable, "-c", "import sys; from ccdask.cli import main; sys.exit(main())"]
sys.path.insert(0, str(HERE))

from bench_combine import peak_rss_of  # noqa: E402  (the process-tree peak RSS sampler)


def make_field(root: Path, exposures: int, chip: int) -> list[Path]:
    from ccdask.simulate import simulate_field

    folder = root / f"field_{exposures}x{chip}"
    marker = folder / "truth.json"
    if not marker.exists():
        simulate_field(
            folder,
            n_exposures=exposures,
            chip_shape=(chip, chip),
            gap=max(4, chip // 16),
            dither=0.1 * chip * 0.25,
            n_stars=max(20, int(40 * (chip / 96) ** 2)),
            seed=11,
        )
    return sorted(folder.glob("field_*.fits"))


def eager_coadd(paths: list[str], out: str) -> None:
    """The reference: whole chips reprojected onto the whole footprint, stacked in memory."""
    from astropy.io import fits
    from astropy.wcs.utils import pixel_to_pixel
    from reproject import reproject_interp

    from ccdask.coadd import auto_footprint, read_chips

    chips = read_chips(paths)
    fp = auto_footprint(chips)
    ny, nx = fp.shape
    n = len(chips)
    sci = np.empty((n, ny, nx), np.float32)
    var = np.empty((n, ny, nx), np.float32)
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    for i, c in enumerate(chips):
        with fits.open(c.path) as h:
            s = h["SCI", c.extver].data.astype(np.float64)
            v = h["VAR", c.extver].data.astype(np.float64)
            bad = (h["DQ", c.extver].data.astype(np.int64) & 15) != 0
        s[bad], v[bad] = 0.0, 0.0
        planes = reproject_interp(
            (np.stack([s, v, bad.astype(float)]), c.wcs),
            fp.wcs,
            shape_out=(3, ny, nx),
            order="bilinear",
            return_footprint=False,
        )
        X, Y = pixel_to_pixel(fp.wcs, c.wcs, xx, yy)
        fx, fy = X - np.floor(X), Y - np.floor(Y)
        g = (1 - 2 * fx * (1 - fx)) * (1 - 2 * fy * (1 - fy))
        ok = np.isfinite(planes[0]) & (planes[2] == 0)
        sci[i] = np.where(ok, planes[0], np.nan)
        var[i] = np.where(ok, planes[1] * g, np.nan)
    from ccdask.coadd._stack import noise_clip

    clipped = noise_clip(sci, var, np.ones(n), 4.0, 4.0, maxiters=5)
    v64 = var.astype(np.float64)
    keep = np.isfinite(clipped)
    w = np.where(keep, 1.0 / np.where(keep, v64, 1.0), 0.0)
    sw = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out_sci = ((w * np.where(keep, clipped, 0.0)).sum(axis=0) / sw).astype(np.float32)
        out_var = (1.0 / sw).astype(np.float32)
    hdr = fp.header()
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(out_sci, hdr, name="SCI"),
            fits.ImageHDU(out_var, hdr, name="VAR"),
            fits.ImageHDU(keep.sum(axis=0).astype(np.int16), hdr, name="COVERAGE"),
        ]
    ).writeto(out, overwrite=True)


def commands(paths: list[Path], out_dir: Path) -> dict[str, list[str]]:
    files = list(map(str, paths))
    eager = [
        sys.executable,
        "-c",
        f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import bench_coadd; "
        "bench_coadd.eager_coadd(json.loads(sys.argv[1]), sys.argv[2])",
        json.dumps(files),
        str(out_dir / "eager.fits"),
    ]
    return {
        "ccdask coadd, LocalCluster 2 workers": [
            *EXE,
            "coadd",
            *files,
            "-o",
            str(out_dir / "cluster.fits"),
            "--overwrite",
            "--workers",
            "2",
        ],
        "ccdask coadd, threads": [*EXE, "coadd", *files, "-o", str(out_dir / "threads.fits"), "--overwrite"],
        "eager reproject + numpy": eager,
    }


def section_speed(root: Path, exposures: int, chip: int, repeat: int) -> None:
    from astropy.io import fits

    paths = make_field(root, exposures, chip)
    out_dir = root / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    cmds = commands(paths, out_dir)
    best: dict[str, tuple[float, float]] = {}
    for _ in range(repeat):
        for name, cmd in cmds.items():
            peak, wall, rc = peak_rss_of(cmd)
            if rc:
                raise SystemExit(f"{name} failed")
            if name not in best or wall < best[name][0]:
                best[name] = (wall, peak)
    with fits.open(out_dir / "cluster.fits") as a, fits.open(out_dir / "eager.fits") as b:
        shape = a["SCI"].data.shape
        same_cov = np.array_equal(a["COVERAGE"].data, b["COVERAGE"].data)
        np.testing.assert_allclose(a["SCI"].data, b["SCI"].data, rtol=1e-5, atol=1e-3)
    ref = best["eager reproject + numpy"][0]
    print(f"\n### speed: {exposures} exposures x 4 chips of {chip}^2, footprint {shape[1]} x {shape[0]}\n")
    print(f"(coverage identical to the eager reference: {same_cov}; SCI equal to 1e-5)\n")
    print("| run | best wall (s) | vs eager | peak RSS of the tree (MiB) |")
    print("| --- | ---: | ---: | ---: |")
    for name, (wall, peak) in best.items():
        print(f"| {name} | {wall:.1f} | {wall / ref:.2f} | {peak / 2**20:.0f} |")


def section_memory(root: Path) -> None:
    from astropy.io import fits

    rows = []
    for exposures, chip in ((20, 128), (20, 256), (20, 512), (10, 256)):
        paths = make_field(root, exposures, chip)
        out_dir = root / f"out_{exposures}x{chip}"
        out_dir.mkdir(parents=True, exist_ok=True)
        cmds = commands(paths, out_dir)
        peak_c, wall_c, _ = peak_rss_of(cmds["ccdask coadd, LocalCluster 2 workers"])
        # the eager reference holds 2 x N float32 planes of the footprint plus float64 work
        # arrays: past 256-pixel chips it needs GBs on a shared machine, so it is not run there
        peak_e, wall_e = peak_rss_of(cmds["eager reproject + numpy"])[:2] if chip <= 256 else (math.nan, math.nan)
        with fits.open(out_dir / "cluster.fits") as h:
            ny, nx = h["SCI"].data.shape
        rows.append((exposures, chip, ny * nx, peak_c, wall_c, peak_e, wall_e))
    base, _, _ = peak_rss_of([*EXE, "--version"])
    print("\n### memory: peak RSS of the process tree against the footprint size and the frames\n")
    print(f"(interpreter + imports alone, `ccdask --version`: {base / 2**20:.0f} MiB)\n")
    print("| exposures | chip | footprint (Mpix) | ccdask cluster (MiB) | wall (s) | eager (MiB) | wall (s) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for e, c, npix, pc, wc, pe, we in rows:
        eager = "not run | —" if math.isnan(pe) else f"{pe / 2**20:.0f} | {we:.1f}"
        print(f"| {e} | {c} | {npix / 1e6:.2f} | {pc / 2**20:.0f} | {wc:.1f} | {eager} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--exposures", type=int, default=20)
    ap.add_argument("--chip", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--sections", nargs="+", default=["speed", "memory"], choices=["speed", "memory"])
    args = ap.parse_args(argv)
    if "speed" in args.sections:
        section_speed(args.dir, args.exposures, args.chip, args.repeat)
    if "memory" in args.sections:
        section_memory(args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
