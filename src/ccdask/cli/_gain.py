"""``ccdask gain``: gain and read noise per amplifier from two flats and two biases."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ..calibrate._gainpairs import HEADER, UNITS, gain_from_files

__all__ = ["register", "run"]


def _hdu_arg(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``ccdask gain`` to the CLI's subparsers.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``parser.add_subparsers()``.

    Returns
    -------
    argparse.ArgumentParser
        The ``gain`` parser.
    """
    p = subparsers.add_parser(
        "gain",
        help="gain and read noise per amplifier from two flats and two biases",
        description="Gain (e-/ADU) and read noise (e-) per chip and amplifier with the "
        "two-image method: G = (S1 + r² S2) / (var(F1 - r F2) - (1 + r²) "
        "var(B1 - B2) / 2), RN = G sqrt(var(B1 - B2) / 2), on raw ADU.",
    )
    p.add_argument("flat1", metavar="FLAT1", help="first flat (raw FITS)")
    p.add_argument("flat2", metavar="FLAT2", help="second flat, same level as the first")
    p.add_argument("bias1", metavar="BIAS1", help="first bias")
    p.add_argument("bias2", metavar="BIAS2", help="second bias")
    p.add_argument(
        "--section",
        metavar="S",
        help="raw-coordinate FITS section, e.g. '[200:900,100:1900]' (default: each amplifier's whole data section)",
    )
    p.add_argument(
        "--hdu", type=_hdu_arg, metavar="N|NAME", help="only this HDU (index, EXTNAME or chip name); default every chip"
    )
    p.add_argument("--profile", metavar="P", help="instrument profile name or TOML path")
    p.add_argument("--sigma", type=float, default=5.0, help="clipping threshold (default 5)")
    p.add_argument(
        "--no-line-offsets",
        dest="line_offsets",
        action="store_false",
        help="keep each readout row's mean in the differences",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``ccdask gain`` and print one line per chip and amplifier.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of :func:`register`'s parser.

    Returns
    -------
    int
        0 on success.
    """
    results = gain_from_files(
        args.flat1,
        args.flat2,
        args.bias1,
        args.bias2,
        hdu=args.hdu,
        profile=args.profile,
        section=args.section,
        line_offsets=args.line_offsets,
        sigma=args.sigma,
    )
    print(HEADER)
    print(UNITS)
    for res in results:
        for line in res.lines():
            print(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ccdask gain`` on its own (``python -m ccdask.cli._gain ...``).

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments after the command name.

    Returns
    -------
    int
        The exit code.
    """
    parser = argparse.ArgumentParser(prog="ccdask")
    register(parser.add_subparsers(dest="command", required=True))
    import sys

    args = parser.parse_args(["gain", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
