"""The ``ccdask`` command line: a thin layer over the Python API.

Exit codes: 0 done; 1 runtime failure; 2 usage error (bad options); 3 bad input or an
unsatisfiable plan (named file, keyword, filter or chip), found before any computation.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from .._version import __version__
from ..errors import (
    CcdaskError,
    CcdaskWarning,
    ConfigError,
    FitsReadError,
    PlanError,
    ProfileError,
    SectionError,
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INPUT = 0, 1, 2, 3

#: Every command: name -> (the module that registers and runs it, the one-line help of
#: ``ccdask --help``). Each module has ``register(subparsers)``, which adds its parser with
#: the same help and sets ``func``. Only the module of the command being run is imported, so
#: a command pays for its own imports only. Adding a command is one line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "catalog": ("ccdask.cli._catalog", "print the frame table of raw files and the problems found"),
    "demo": ("ccdask.cli._demo", "simulate a small mosaic night and reduce it"),
    "reduce": ("ccdask.cli._reduce", "reduce a night: masters, science frames, QA, manifest"),
    "config": ("ccdask.cli._config", "print the documented default configuration"),
    "combine": ("ccdask.cli._combine", "combine frames (clipped mean/median/sum) into one FITS file"),
    "cache": ("ccdask.cli._cache", "list or delete cached masters"),
    "coadd": ("ccdask.cli._coadd", "reproject reduced frames onto one sky footprint and stack them"),
    "crosstalk": ("ccdask.cli._crosstalk", "measure crosstalk coefficients between the amplifiers of each chip"),
    "gain": ("ccdask.cli._gain", "gain and read noise per amplifier from two flats and two biases"),
    "inspect": (
        "ccdask.cli._inspect",
        "show, per chip, the profile, layout and amplifiers ccdask finds, and where each fact came from",
    ),
    "profile": ("ccdask.cli._profile", "write a starting instrument profile from a raw file"),
    "ptc": ("ccdask.cli._ptc", "photon-transfer curve: gain, read noise, turn-off and linearity per amplifier"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``ccdask`` parser. Every command's full parser by default (the reference docs);
    with ``only``, that command's full parser and a one-line entry for each other command
    (what ``main`` uses, so it imports one command module; ``only=""``: none in full)."""
    parser = argparse.ArgumentParser(
        prog="ccdask",
        description="Out-of-core, parallel reduction of raw CCD frames on Dask.",
    )
    parser.add_argument("--version", action="version", version=f"ccdask {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(module).register(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first argument that is not an option (the top-level
    options, ``--help`` and ``--version``, take no value)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def _one_line(text: object) -> str:
    """``text`` with its line breaks (and the indentation after them) turned into one space."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` of the command line: ``ccdask: warning: ...``, one line each.

    A catalogue warning that carries its ``problems`` gives one line per problem
    (``ccdask: warning: <file>[<hdu>]: <problem>``); any other ccdask warning is its message;
    a warning of another library is its category and message. No source line is printed.
    """
    stream = file if file is not None else sys.stderr
    if stream is None:  # no stderr (pythonw): nowhere to show it
        return
    problems = getattr(message, "problems", None)
    if problems:
        lines = [_one_line(p) + ("" if "skipped" in p.reason else "; skipped") for p in problems]
    elif issubclass(category, CcdaskWarning):
        lines = [_one_line(message)]
    else:
        lines = [f"{category.__name__}: {_one_line(message)}"]
    try:
        for text in lines:
            stream.write(f"ccdask: warning: {text}\n")
        stream.flush()
    except OSError:  # a closed or broken stderr must not turn a warning into a failure
        pass


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=_command_of(argv) or "")
    args = parser.parse_args(argv)
    # Warnings show as one clean line each, for this command only: the library's warnings and
    # filters stay as they are for every other caller. ccdask's own warnings are always shown
    # (once per message), whatever filters the calling process set.
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        warnings.simplefilter("default", CcdaskWarning)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except (PlanError, FitsReadError, SectionError, ProfileError, ConfigError) as exc:
        print(f"ccdask {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except BrokenPipeError:
        # the reader of our output went away (``ccdask inspect ... | head``): not a failure;
        # point stdout at /dev/null so the interpreter's final flush does not complain
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (CcdaskError, OSError) as exc:  # OSError: an output folder that cannot be written...
        print(f"ccdask {args.command}: failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"ccdask {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
