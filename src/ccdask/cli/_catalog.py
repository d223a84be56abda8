"""``ccdask catalog RAW...``: the frame table of raw files and the problems found (headers only)."""

from __future__ import annotations

import argparse
import warnings
from typing import Any

HELP = "print the frame table of raw files and the problems found"


def register(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser("catalog", help=HELP)
    p.add_argument("raw", nargs="+", metavar="RAW", help="raw FITS files or folders")
    p.add_argument("--profile", help="instrument profile name or TOML path (default: detect)")
    p.add_argument("--long", action="store_true", help="one row per file and chip")
    p.add_argument("--strict", action="store_true", help="unusable files are errors, not skipped")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..catalog import Catalog
    from ..errors import CcdaskWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CcdaskWarning)  # the summary lists the problems itself
        cat = Catalog.scan(args.raw, profile=args.profile, strict=args.strict)
    print(cat.summary(long=args.long))
    return 0
