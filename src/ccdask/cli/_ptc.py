"""``ccdask ptc``: the photon-transfer curve per amplifier from pairs of flats and biases."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["register", "run"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``ccdask ptc`` to the CLI's subparsers.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``parser.add_subparsers()``.

    Returns
    -------
    argparse.ArgumentParser
        The ``ptc`` parser.
    """
    p = subparsers.add_parser(
        "ptc",
        help="photon-transfer curve: gain, read noise, turn-off and linearity per amplifier",
        description="The photon-transfer curve per chip and amplifier from raw biases (two or more) and pairs "
        "of flats at several levels (the flats of one exposure time pair up): gain (the slope of the photon "
        "variance against the signal), read noise (from the biases), turn-off (the signal of largest variance: "
        "the full well) and the linearity residual (signal against exposure time). --write saves gain, "
        "rdnoise and saturate as a profile's [[layout.amplifiers]] tables, --linearity a linearity.file.",
    )
    p.add_argument("raw", nargs="+", metavar="RAW", help="raw FITS frames: biases and flats (others are skipped)")
    p.add_argument("--profile", metavar="P", help="instrument profile name or TOML path")
    p.add_argument("--sigma", type=float, default=5.0, help="clipping threshold of the statistics (default 5)")
    p.add_argument(
        "--fit-fraction",
        type=float,
        default=0.8,
        help="fit the gain and the linearity over the pairs below this fraction of the turn-off (default 0.8)",
    )
    p.add_argument("--plot", metavar="FILE.png", help="draw the curves and the linearity residuals")
    p.add_argument("--write", metavar="FILE.toml", help="write gain, rdnoise and saturate as profile tables")
    p.add_argument("--linearity", metavar="FILE.toml", help="write the measured curves as a linearity.file")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``ccdask ptc``: one line per chip and amplifier, optionally a plot and TOML files.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of :func:`register`'s parser.

    Returns
    -------
    int
        0 on success.
    """
    from ..calibrate._ptc import plot_ptc, ptc_from_files, ptc_lines, write_linearity, write_profile_snippet

    done = ptc_from_files(args.raw, profile=args.profile, sigma=args.sigma, fit_fraction=args.fit_fraction)
    print(f"{len(done.pairs)} pairs of flats, {len(done.biases)} biases")
    if done.skipped:
        print(
            f"skipped {len(done.skipped)} file(s) (not a bias, or a flat without a partner): {', '.join(done.skipped)}"
        )
    for line in ptc_lines(done.amplifiers):
        print(line)
    note = f"{len(done.pairs)} pairs, {len(done.biases)} biases"
    if args.plot:
        print(f"wrote {plot_ptc(args.plot, done.amplifiers)}")
    if args.write:
        print(f"wrote {write_profile_snippet(args.write, done.amplifiers, note=note)}")
    if args.linearity:
        print(f"wrote {write_linearity(args.linearity, done.amplifiers, note=note)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ccdask ptc`` on its own (``python -m ccdask.cli._ptc ...``)."""
    parser = argparse.ArgumentParser(prog="ccdask")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["ptc", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
