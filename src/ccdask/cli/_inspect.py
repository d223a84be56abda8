"""``ccdask inspect FILE...``: what ccdask makes of raw files, chip by chip, and why.

For each chip (file x image extension) it prints the instrument profile chosen and why (the
``[detect]`` condition that matched, ``--profile``, or the ``generic`` fallback), the image type
and its reason, the chip's shapes, DETSEC and binning, the placement rule of
``docs/profiles.md`` and, per amplifier, its data section, serial and parallel overscans,
placement (ccdsec), flips, gain, read noise and saturation, each with where it came from: the
header keyword and its value, the profile entry, or the default. Every fact line reads
``label  value  <- origin``. ``--json`` prints the same facts as one JSON document (structure in
``docs/profiles.md``); ``--png`` draws each chip's raw layout over its pixels.

The chips are those ``Catalog.scan`` finds, file by file, with the layouts it builds; a file or
extension it cannot use is one line ``ccdask inspect: error: FILE[HDU]: reason`` on stderr, and
the exit code is then 3.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..catalog import Catalog, Entry, Problem
from ..errors import CcdaskWarning
from ..profiles import ChipLayout, Profile, load_profile
from ..profiles._profile import Detection, detect_profile_explained
from ..profiles._resolve import LayoutExplanation, Origin

__all__ = [
    "INSPECT_FORMAT",
    "ChipReport",
    "draw_layouts",
    "format_report",
    "inspect_files",
    "register",
    "report_dict",
    "run",
]

EXIT_OK, EXIT_INPUT = 0, 3

#: The ``format`` member of ``--json`` output; it changes only when the structure does.
INSPECT_FORMAT = "ccdask-inspect/1"


@dataclass(frozen=True)
class ChipReport:
    """One chip as ``ccdask inspect`` reports it.

    ``how`` is ``"forced"`` (``--profile``), ``"detected"`` (a shipped profile's ``[detect]``
    matched: ``detection``) or ``"generic"`` (nothing matched); ``why`` says it in words.
    """

    entry: Entry
    profile: Profile
    how: str
    why: str
    detection: Detection | None
    layout: ChipLayout
    explanation: LayoutExplanation
    chip_origin: str


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``inspect`` command to a ``ccdask`` subparsers object (``func=run``)."""
    p = subparsers.add_parser(
        "inspect",
        help="show, per chip, the profile, layout and amplifiers ccdask finds, and where each fact came from",
        description="Per chip (file x extension): the instrument profile chosen and why, the image type "
        "and why, the placement rule, and each amplifier's data section, serial and parallel overscan, "
        "placement, flips, gain, read noise and saturation, each with the header keyword (and value), "
        "profile entry or default it came from. Exit code 3 when a file or extension cannot be used.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="raw FITS files (plain, gz, fpack) or folders")
    p.add_argument("--profile", metavar="NAME|PATH", help="instrument profile for every file (default: detect)")
    p.add_argument("--png", metavar="OUT.png", help="draw each chip's raw layout over its pixels into this PNG")
    p.add_argument("--json", action="store_true", help="print the facts as JSON (see docs/profiles.md)")
    p.set_defaults(func=run)
    return p


# -- gathering -----------------------------------------------------------------------------------


def inspect_files(
    paths: Sequence[str | Path], *, profile: str | Path | Profile | None = None
) -> tuple[list[ChipReport], list[Problem]]:
    """The chips of ``paths`` with their explained layouts, and the problems found.

    Each path is catalogued on its own (``Catalog.scan``), so the chips and their layouts are
    exactly the catalogue's; the profile is ``profile`` for every file, else detected per chip.
    """
    forced = None if profile is None else load_profile(profile)
    reports: list[ChipReport] = []
    problems: list[Problem] = []
    for path in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CcdaskWarning)  # the problems are reported by the caller
            cat = Catalog.scan([path], profile=forced, threads=1)
        problems.extend(cat.problems)
        for e in cat.entries:
            reports.append(_report(e, forced, profile))
    return reports, problems


def _report(e: Entry, forced: Profile | None, asked: object) -> ChipReport:
    detection = None
    if forced is not None:
        prof, how, why = forced, "forced", f"forced by --profile {asked} ({forced.source})"
    else:
        prof, detection = detect_profile_explained(e.header)
        if detection is None:
            how, why = "generic", "no profile matched: generic"
        else:
            how, why = "detected", f"detected: {detection.reason}"
    bitpix = e.info.bitpix if e.info is not None else None
    layout, explanation = prof.explain_layout(e.header, e.shape, chip=e.chip, path=e.path, hdu=e.hdu, bitpix=bitpix)
    return ChipReport(e, prof, how, why, detection, layout, explanation, _chip_origin(e, prof))


def _chip_origin(e: Entry, prof: Profile) -> str:
    """Where the chip's name came from, as the catalogue chose it."""
    found = prof.lookup_entry(e.header, "chip")
    if found is not None and str(found[0]) == e.chip:
        value, key = found
        return key if "{" in key else f"{key} = '{value}'"
    keys = "/".join(prof.keywords.get("chip", ())) or "chip"
    if e.extname and e.chip == e.extname:
        return f"EXTNAME = '{e.extname}' (none of {keys})"
    return f"the HDU number (none of {keys}, no EXTNAME)"


# -- facts, for the text and the JSON ------------------------------------------------------------


def _fact(value: Any, origin: Origin | None) -> dict[str, Any]:
    return {"value": value, "origin": None if origin is None else origin.to_dict()}


def report_dict(r: ChipReport) -> dict[str, Any]:
    """The facts of one chip as the JSON structure ``--json`` prints (docs/profiles.md)."""
    e, lay, ex = r.entry, r.layout, r.explanation
    cls = r.profile.classify(e.header)
    amps = []
    for amp, aex in zip(lay.amplifiers, ex.amplifiers, strict=True):
        o = aex.origins
        amps.append(
            {
                "name": amp.name,
                "datasec": _fact(str(amp.datasec), o["datasec"]),
                "trimsec": _fact(aex.found.get("trimsec"), o.get("trimsec")),
                "biassec": _fact(None if amp.biassec is None else str(amp.biassec), o.get("biassec")),
                "overscan_axis": _fact(amp.overscan_axis, o.get("overscan_axis")),
                "parallel_biassec": _fact(
                    None if amp.parallel_biassec is None else str(amp.parallel_biassec), o.get("parallel_biassec")
                ),
                "overscan_order": (
                    _fact(amp.overscan_order, o.get("overscan_order"))
                    if amp.parallel_biassec is not None
                    else _fact(None, None)
                ),
                "ccdsec": _fact(str(amp.ccdsec), o["ccdsec"]),
                "detsec": _fact(aex.found.get("detsec"), o.get("detsec")),
                "flips": {"x": aex.flips["x"], "y": aex.flips["y"], "reason": aex.flip_reason},
                "gain": _fact(amp.gain, o["gain"]),
                "rdnoise": _fact(amp.rdnoise, o["rdnoise"]),
                "saturate": _fact(amp.saturate, o["saturate"]),
            }
        )
    return {
        "file": e.path,
        "hdu": e.hdu,
        "extname": e.extname,
        "chip": e.chip,
        "chip_origin": r.chip_origin,
        "profile": {
            "name": r.profile.name,
            "source": r.profile.source,
            "how": r.how,
            "reason": r.why,
            "conditions": [
                {"keyword": k, "pattern": p, "value": v, "hit": hit}
                for k, p, v, hit in (r.detection.conditions if r.detection else ())
            ],
        },
        "imagetyp": {"type": cls.imagetyp, "label": cls.label, "reason": cls.reason},
        "raw_shape": list(lay.raw_shape),
        "trimmed_shape": list(lay.trimmed_shape),
        "detsec": _fact(None if lay.detsec is None else str(lay.detsec), ex.detsec_origin),
        "binning": {"x": ex.binning[0], "y": ex.binning[1], "origin": ex.binning_origin.to_dict()},
        "placement": {"rule": ex.rule, "number": ex.rule_number, "reason": ex.rule_reason},
        "amplifiers_from": ex.amplifiers_from,
        "amplifiers": amps,
    }


LABEL_WIDTH, VALUE_WIDTH = 23, 27


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "unknown"
    text = str(int(value)) if float(value).is_integer() else repr(float(value))
    return f"{text} {unit}"


def _line(label: str, value: object, origin: object = None, indent: str = "") -> str:
    head = f"{indent}{label:<{LABEL_WIDTH - len(indent)}}{value}"
    return head if origin is None else f"{head:<{LABEL_WIDTH + VALUE_WIDTH}} <- {origin}"


def format_report(r: ChipReport) -> str:
    """The text block of one chip: a title line, then ``label  value  <- origin`` lines."""
    e, lay, ex = r.entry, r.layout, r.explanation
    cls = r.profile.classify(e.header)
    ext = f"HDU {e.hdu}" + (f" {e.extname}" if e.extname else "")
    lines = [
        f"== {Path(e.path).name} [{ext}] chip {e.chip} ==",
        _line("file", e.path),
        _line("chip", e.chip, r.chip_origin),
        _line("profile", r.profile.name, r.why),
        _line("image type", f"{cls.imagetyp} / {cls.label}", cls.reason),
        _line("raw shape", f"{lay.raw_shape[0]}x{lay.raw_shape[1]}", "ny x nx: NAXIS2 x NAXIS1"),
        _line("trimmed shape", f"{lay.trimmed_shape[0]}x{lay.trimmed_shape[1]}", "the amplifiers' ccdsecs"),
        _line("detsec", lay.detsec or "none", ex.detsec_origin or "no chip DETSEC keyword"),
        _line("binning", f"{ex.binning[0]}x{ex.binning[1]}", ex.binning_origin),
        _line("placement", f"rule {ex.rule_number} {ex.rule}", ex.rule_reason),
        _line("amplifiers", lay.namps, ex.amplifiers_from),
    ]
    for amp, aex in zip(lay.amplifiers, ex.amplifiers, strict=True):
        o = aex.origins
        serial = amp.biassec if amp.overscan_axis == "serial" else None
        parallel = amp.parallel_biassec or (amp.biassec if amp.overscan_axis == "parallel" else None)
        parallel_origin = o.get("parallel_biassec") if amp.parallel_biassec is not None else o.get("biassec")
        flips = ", ".join(axis for axis in ("x", "y") if aex.flips[axis]) or "none"
        lines.append(f"  amplifier {amp.name}")
        put = lines.append
        put(_line("data", amp.datasec, o["datasec"], "    "))
        if "trimsec" in aex.found:
            put(_line("trim section", aex.found["trimsec"], o["trimsec"], "    "))
        put(_line("serial overscan", serial or "none", o["biassec"] if serial else None, "    "))
        put(_line("parallel overscan", parallel or "none", parallel_origin if parallel else None, "    "))
        if amp.biassec is not None:
            put(_line("overscan axis", amp.overscan_axis, o.get("overscan_axis"), "    "))
        if amp.parallel_biassec is not None:
            put(_line("overscan order", amp.overscan_order, o.get("overscan_order"), "    "))
        put(_line("ccdsec", amp.ccdsec, o["ccdsec"], "    "))
        if "detsec" in aex.found:
            put(_line("amplifier detsec", aex.found["detsec"], o["detsec"], "    "))
        put(_line("flips", flips, aex.flip_reason, "    "))
        put(_line("gain", _num(amp.gain, "e-/ADU"), o["gain"], "    "))
        put(_line("read noise", _num(amp.rdnoise, "e-"), o["rdnoise"], "    "))
        put(_line("saturation", _num(amp.saturate, "ADU"), o["saturate"], "    "))
    return "\n".join(lines)


def _one_line(text: object) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


# -- the picture ---------------------------------------------------------------------------------

SERIAL_COLOUR, PARALLEL_COLOUR, DATA_COLOUR, ARROW_COLOUR = "orange", "deepskyblue", "lime", "yellow"


def draw_layouts(reports: Sequence[ChipReport], out: str | Path) -> Path:
    """Draw each chip's raw layout over a zscale of its raw pixels into one PNG, atomically.

    One panel per chip: data sections outlined, serial and parallel overscans filled in two
    colours, amplifier names, and from each amplifier's pixel that lands first in the chip
    arrows along the chip's +x and +y (an arrow pointing left or down is a flip). Pixels are
    read through ``ccdask.io`` one chip at a time, subsampled to the panel's resolution.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from ..utils import atomic_path

    n = len(reports)
    ncols = min(n, 3 if n <= 9 else 6 if n <= 36 else 8)
    nrows = math.ceil(n / ncols)
    width = 6.0 if n <= 4 else 4.0 if n <= 16 else 2.5
    aspect = max(r.layout.raw_shape[0] / r.layout.raw_shape[1] for r in reports)
    height = min(1.6 * width, max(0.3 * width, width * aspect)) + 0.7
    dpi = 100
    fig = Figure(figsize=(width * ncols, height * nrows + 0.5), dpi=dpi)
    FigureCanvasAgg(fig)
    for i, r in enumerate(reports):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        _draw_chip(ax, r, pixels=int(2 * max(width, height) * dpi))
    fig.legend(
        handles=[
            Patch(edgecolor=DATA_COLOUR, fill=False, label="data"),
            Patch(facecolor=SERIAL_COLOUR, alpha=0.5, label="serial overscan"),
            Patch(facecolor=PARALLEL_COLOUR, alpha=0.5, label="parallel overscan"),
            Line2D([], [], color=ARROW_COLOUR, marker=">", label="chip +x / +y from the amplifier's first pixel"),
        ],
        loc="lower center",
        ncol=4,
        fontsize=8,
        frameon=False,
    )
    fig.subplots_adjust(left=0.04, right=0.98, top=1 - 0.35 / (height * nrows + 0.5), bottom=0.5 / (height * nrows))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return Path(out)


def _draw_chip(ax: Any, r: ChipReport, *, pixels: int) -> None:
    import numpy as np
    from astropy.visualization import ZScaleInterval
    from matplotlib.patches import Rectangle

    ny, nx = r.layout.raw_shape
    step = max(1, math.ceil(max(ny, nx) / pixels))
    image = r.entry.source.read(slice(None, None, step), slice(None, None, step))
    finite = image[np.isfinite(image)]
    vmin, vmax = ZScaleInterval().get_limits(finite) if finite.size else (0.0, 1.0)
    ax.imshow(
        image,
        origin="lower",
        cmap="gray",
        vmin=vmin,
        vmax=vmax,
        extent=(0.5, nx + 0.5, 0.5, ny + 0.5),
        interpolation="nearest",
    )

    def box(sec: Any, **style: Any) -> tuple[float, float, float, float]:
        s = sec.normalized()
        x0, y0 = s.x.start - 0.5, s.y.start - 0.5
        w, h = s.x.stop - s.x.start + 1, s.y.stop - s.y.start + 1
        ax.add_patch(Rectangle((x0, y0), w, h, **style))
        return x0, y0, w, h

    for amp in r.layout.amplifiers:
        parallel = amp.parallel_biassec or (amp.biassec if amp.overscan_axis == "parallel" else None)
        serial = amp.biassec if amp.overscan_axis == "serial" else None
        for sec, colour in ((serial, SERIAL_COLOUR), (parallel, PARALLEL_COLOUR)):
            if sec is not None:
                box(sec, facecolor=colour, edgecolor=colour, alpha=0.45, lw=0.8)
        x0, y0, w, h = box(amp.datasec, fill=False, edgecolor=DATA_COLOUR, lw=1.2)
        flip_y, flip_x = amp.datasec.flipped
        marks = " ".join(f"flip {a}" for a, f in (("x", flip_x), ("y", flip_y)) if f)
        ax.text(
            x0 + w / 2,
            y0 + h / 2,
            amp.name + (f"\n{marks}" if marks else ""),
            ha="center",
            va="center",
            fontsize=8,
            color="white",
            bbox={"facecolor": "black", "alpha": 0.6, "pad": 1.5, "edgecolor": "none"},
        )
        # the raw pixel that lands first in the chip, and the chip's +x and +y from it
        cx, cy = float(amp.datasec.x.start or 1), float(amp.datasec.y.start or 1)  # resolved: never None
        for dx, dy, label in ((-1 if flip_x else 1, 0, "x"), (0, -1 if flip_y else 1, "y")):
            lx, ly = 0.3 * w * dx, 0.3 * h * dy
            ax.annotate(
                "",
                xy=(cx + lx, cy + ly),
                xytext=(cx, cy),
                arrowprops={"arrowstyle": "->", "color": ARROW_COLOUR, "lw": 1.2},
            )
            ax.text(cx + 1.08 * lx, cy + 1.08 * ly, label, color=ARROW_COLOUR, fontsize=7, ha="center", va="center")
    e = r.entry
    ax.set_title(
        f"{Path(e.path).name}[{e.hdu}] chip {e.chip}\nprofile {r.profile.name}, placed by rule {r.explanation.rule}",
        fontsize=7,
    )
    ax.set_xlim(0.5, nx + 0.5)
    ax.set_ylim(0.5, ny + 0.5)
    ax.tick_params(labelsize=6)


# -- the command ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Execute ``ccdask inspect`` for parsed ``args``: 0, or 3 when a file or chip failed."""
    reports, problems = inspect_files(args.files, profile=args.profile)
    png = None
    if args.png and reports:
        png = draw_layouts(reports, args.png)
    if args.json:
        doc = {
            "format": INSPECT_FORMAT,
            "chips": [report_dict(r) for r in reports],
            "problems": [
                {"file": p.path, "hdu": p.hdu, "reason": _one_line(p.reason), "text": _one_line(p)} for p in problems
            ],
            "png": None if png is None else str(png),
        }
        print(json.dumps(doc, indent=2, default=str))
    else:
        print("\n\n".join(format_report(r) for r in reports))
        if png is not None:
            print(f"\nlayout picture: {png}")
    for p in problems:
        print(f"ccdask inspect: error: {_one_line(p)}", file=sys.stderr)
    return EXIT_INPUT if problems else EXIT_OK
