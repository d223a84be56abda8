"""``ccdask config --defaults | --check FILE``: the documented default configuration, or a check."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "print the documented default configuration"


def register(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser("config", help=HELP)
    p.add_argument("--defaults", action="store_true", help="print every option with its default")
    p.add_argument("--check", metavar="FILE", help="validate a configuration file")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..config import defaults_toml, load_config

    if args.check:
        load_config(args.check)
        print(f"{args.check}: valid")
        return 0
    print(defaults_toml())
    return 0
