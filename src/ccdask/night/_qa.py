"""Quality assessment: per-chip statistics, binned thumbnails and zscale PNG pictures.

Statistics and thumbnails are computed by the same task that writes a reduced chip (from the
numpy arrays it already holds), so QA costs no extra read. Pictures are drawn on the client
from the small binned thumbnails.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import dq as DQ
from ..sections import Range, Section
from ..utils import MAD_TO_SIGMA, atomic_path

__all__ = ["bin_factor", "bin_image", "chip_stats", "focal_plane", "save_png", "stats_table", "write_qa"]


def chip_stats(sci: np.ndarray, var: np.ndarray | None, dqa: np.ndarray) -> dict[str, Any]:
    """Sky level (median of good pixels), robust noise, cosmic-ray and flagged fractions."""
    good = (dqa == 0) & np.isfinite(sci)
    vals = sci[good].astype(np.float64)
    if vals.size:
        sky = float(np.median(vals))
        noise = float(MAD_TO_SIGMA * np.median(np.abs(vals - sky)))
    else:
        sky = noise = float("nan")
    expected = float(np.sqrt(np.median(var[good]))) if var is not None and vals.size else float("nan")
    n = sci.size
    return {
        "sky": sky,
        "noise": noise,
        "expected_noise": expected,
        "cosmic_pixels": int(np.count_nonzero(dqa & DQ.COSMIC)),
        "saturated_pixels": int(np.count_nonzero(dqa & DQ.SATURATED)),
        "bad_pixels": int(np.count_nonzero(dqa & DQ.BAD)),
        "rejected_fraction": float(np.count_nonzero(dqa) / n) if n else float("nan"),
    }


def bin_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor`` × ``factor`` blocks (NaNs ignored; partial edge blocks kept)."""
    if factor <= 1:
        return np.asarray(image, dtype=np.float32)
    ny, nx = image.shape
    py, px = (-ny) % factor, (-nx) % factor
    padded = np.pad(np.asarray(image, dtype=np.float64), ((0, py), (0, px)), constant_values=np.nan)
    blocks = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor)
    with np.errstate(invalid="ignore"), _quiet():
        binned: np.ndarray = np.nanmean(blocks, axis=(1, 3)).astype(np.float32)
    return binned


def _start(r: Range) -> int:
    """The first (1-based) index of a resolved range."""
    if r.start is None:
        raise ValueError(f"unresolved section range {r}")
    return r.start


class _quiet:
    """Silence numpy's 'mean of empty slice' for all-NaN blocks."""

    def __enter__(self) -> None:
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: Any) -> None:
        self._cm.__exit__(*exc)


def bin_factor(shape: tuple[int, int], max_pixels: int) -> int:
    return max(1, math.ceil(max(shape) / max_pixels))


def focal_plane(thumbs: Mapping[str, np.ndarray], detsecs: Mapping[str, Section | None], factor: int) -> np.ndarray:
    """Place binned chips at their DETSEC (binned by ``factor``); chips without one side by side.

    DETSEC counts unbinned detector pixels: a chip read out binned (its DETSEC spans about
    ``binning`` times its pixels) is placed at its DETSEC divided by that binning too, so binned
    mosaics stay contiguous.
    """
    placed = []
    x_cursor = 0
    for chip, img in thumbs.items():
        sec = detsecs.get(chip)
        if sec is not None:
            n = sec.normalized()
            by = max(1, round(n.y.length / (img.shape[0] * factor)))
            bx = max(1, round(n.x.length / (img.shape[1] * factor)))
            y0, x0 = (_start(n.y) - 1) // (factor * by), (_start(n.x) - 1) // (factor * bx)
            flip_y, flip_x = sec.flipped
            if flip_y:
                img = img[::-1]
            if flip_x:
                img = img[:, ::-1]
        else:
            y0, x0 = 0, x_cursor
        x_cursor = max(x_cursor, x0 + img.shape[1] + 2)
        placed.append((y0, x0, img))
    ny = max(y0 + img.shape[0] for y0, _, img in placed)
    nx = max(x0 + img.shape[1] for _, x0, img in placed)
    canvas = np.full((ny, nx), np.nan, dtype=np.float32)
    for y0, x0, img in placed:
        canvas[y0 : y0 + img.shape[0], x0 : x0 + img.shape[1]] = img
    return canvas


def save_png(path: str | os.PathLike[str], image: np.ndarray, title: str = "", marks: np.ndarray | None = None) -> str:
    """A zscale-stretched greyscale PNG of ``image`` (NaN shown in red; pixels of ``marks``,
    e.g. cosmic-ray hits, in cyan), written atomically.

    Drawn on a bare ``matplotlib.figure.Figure`` (no pyplot), so the caller's backend, e.g.
    Jupyter's inline plots, is left alone and tasks on any worker can draw.
    """
    from astropy.visualization import ZScaleInterval
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    finite = image[np.isfinite(image)]
    vmin, vmax = ZScaleInterval().get_limits(finite) if finite.size else (0.0, 1.0)
    ny, nx = image.shape
    scale = 8.0 / max(ny, nx)
    height = max(2.0, ny * scale) + 0.4
    fig = Figure(figsize=(max(2.0, nx * scale), height), dpi=max(72, int(max(ny, nx) / 8)))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1 - 0.4 / height))
    cmap = colormaps["gray"].with_extremes(bad="red")
    ax.imshow(np.ma.masked_invalid(image), origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    if marks is not None and np.any(marks):
        overlay = np.zeros((*image.shape, 4), dtype=np.float32)
        overlay[np.asarray(marks, dtype=bool)] = (0.0, 0.9, 1.0, 1.0)
        ax.imshow(overlay, origin="lower", interpolation="nearest")
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return str(path)


def stats_table(rows: Sequence[dict[str, Any]]) -> Any:
    """The per-chip statistics rows as an astropy Table (written as ECSV by the pipeline)."""
    from astropy.table import Table

    if not rows:
        return Table()
    names = list(dict.fromkeys(k for r in rows for k in r))
    return Table(rows=[tuple(r.get(k, float("nan")) for k in names) for r in rows], names=names)


def write_qa(
    qa_dir: Path,
    finals: Sequence[tuple[Any, Path]],
    sci_results: Sequence[list[dict[str, Any]]],
    master_results: Sequence[tuple[str, str, list[dict[str, Any]]]],
    detsecs: Mapping[str, Section | None],
    factor: int,
) -> None:
    """OUT/qa: one focal-plane PNG per reduced exposure and per master file written, and the
    per-chip statistics table ``stats.ecsv``.

    ``finals`` pairs each exposure with its output, ``sci_results`` holds what its chip tasks
    returned (stats and thumbnails), ``master_results`` is ``(label, path, chip results)``.
    """
    rows = []
    for (exp, final), chips in zip(finals, sci_results, strict=True):
        for c in chips:
            rows.append(
                {
                    "file": final.name,
                    "chip": c["chip"],
                    "filter": exp.filter or "",
                    "exptime": exp.exptime if exp.exptime is not None else float("nan"),
                    **c["stats"],
                }
            )
        thumbs = {c["chip"]: c["thumb"] for c in chips}
        det = {e.chip: e.layout.detsec for e in exp.chips}
        hits = {c["chip"]: c["hits"].astype(np.float32) for c in chips if "hits" in c}
        marks = focal_plane(hits, det, factor) > 0 if len(hits) == len(thumbs) and hits else None
        save_png(
            qa_dir / f"{exp.name}.png",
            focal_plane(thumbs, det, factor),
            f"{exp.name} ({exp.filter or '-'}, {exp.exptime or 0:g} s; cosmic rays in cyan)",
            marks=marks,
        )
    for label, path, chips in master_results:
        thumbs = {c["chip"]: c["thumb"] for c in chips}
        save_png(
            qa_dir / f"master_{Path(path).stem}.png",
            focal_plane(thumbs, {c: detsecs.get(c) for c in thumbs}, factor),
            label,
        )
    if rows:
        with atomic_path(qa_dir / "stats.ecsv") as tmp:
            stats_table(rows).write(tmp, format="ascii.ecsv", overwrite=True)
