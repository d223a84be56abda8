"""``ccdask crosstalk``: crosstalk coefficients between the amplifiers of each chip (and, with
``--inter-chip``, between amplifiers of different chips of the same exposures), from raw frames."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["register", "run"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``ccdask crosstalk`` to the CLI's subparsers.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``parser.add_subparsers()``.

    Returns
    -------
    argparse.ArgumentParser
        The ``crosstalk`` parser.
    """
    p = subparsers.add_parser(
        "crosstalk",
        help="measure crosstalk coefficients between the amplifiers of each chip",
        description="Crosstalk coefficients per chip and ordered amplifier pair (source -> victim) from raw "
        "frames with bright or saturated stars: a robust least-squares fit of the victim's pixels "
        "(background subtracted, its own sources masked) against the source's signal where the source is "
        "bright, with a jackknife error. --inter-chip measures every ordered pair of amplifiers of different "
        "chips of the same files too (chips read by one controller; --chips restricts the group). --write saves "
        "them in the format of the crosstalk.file option (inter-chip pairs only where the coefficient differs "
        "from zero by more than --inter-sigma standard errors).",
    )
    p.add_argument("raw", nargs="+", metavar="RAW", help="raw FITS frames (science frames with bright stars)")
    p.add_argument("--profile", metavar="P", help="instrument profile name or TOML path")
    p.add_argument(
        "--threshold",
        type=float,
        default=5000.0,
        help="source signal (ADU above its overscan) from which a pixel is used (default 5000)",
    )
    p.add_argument("--quadratic", action="store_true", help="fit a quadratic term too")
    p.add_argument("--sigma", type=float, default=3.0, help="clipping threshold of the robust fit (default 3)")
    p.add_argument(
        "--inter-chip",
        action="store_true",
        help="measure crosstalk between amplifiers of different chips of the same exposures too",
    )
    p.add_argument(
        "--chips",
        metavar="C1,C2,...",
        help="only these chips (comma-separated names; e.g. the chips of one controller)",
    )
    p.add_argument(
        "--inter-sigma",
        type=float,
        default=3.0,
        help="--write keeps an inter-chip pair when |linear| exceeds this many standard errors (default 3)",
    )
    p.add_argument("--write", metavar="FILE.toml", help="write the coefficients to this file")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``ccdask crosstalk``: one line per chip and pair, optionally a coefficient file.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of :func:`register`'s parser.

    Returns
    -------
    int
        0 on success.
    """
    from ..calibrate._crosstalk import measure_crosstalk_files, write_crosstalk

    chips = [c.strip() for c in args.chips.split(",") if c.strip()] if args.chips else None
    fits_list = measure_crosstalk_files(
        args.raw,
        profile=args.profile,
        threshold=args.threshold,
        quadratic=args.quadratic,
        sigma=args.sigma,
        inter_chip=args.inter_chip,
        chips=chips,
    )
    print(
        f"{'source':<16} {'victim':<16} {'linear':>12} {'+/-':>10} {'quadratic':>12} {'+/-':>10} "
        f"{'pixels':>8} {'scatter':>8}"
    )
    for f in fits_list:
        src = f"{f.source_chip or f.chip}:{f.source}"
        print(
            f"{src:<16} {f.chip + ':' + f.victim:<16} {f.linear:>12.4e} {f.linear_err:>10.2e} "
            f"{f.quadratic:>12.4e} {f.quadratic_err:>10.2e} {f.npix:>8d} {f.scatter:>8.2f}"
        )
    if args.write:
        kept = [f for f in fits_list if f.source_chip is None or abs(f.linear) > args.inter_sigma * f.linear_err]
        dropped = len(fits_list) - len(kept)
        note = f"{len(args.raw)} frames, threshold {args.threshold:g} ADU"
        if args.inter_chip:
            note += f", inter-chip pairs within {args.inter_sigma:g} sigma of zero left out ({dropped})"
        path = write_crosstalk(args.write, kept, note=note)
        print(f"wrote {path}" + (f" ({dropped} inter-chip pairs consistent with zero left out)" if dropped else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ccdask crosstalk`` on its own (``python -m ccdask.cli._crosstalk ...``)."""
    parser = argparse.ArgumentParser(prog="ccdask")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["crosstalk", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
