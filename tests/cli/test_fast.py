"""A fast command line: each command imports what it needs only.

``ccdask --version`` and ``--help`` import neither numpy, astropy nor dask; ``ccdask catalog``
reads headers with astropy's FITS module and imports no dask, astropy.table, numba or zarr. The
checks read the imports of a real ``python -X importtime -m ccdask ...`` process (what was
imported, not how long it took: timings live in benchmarks/bench_cli.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from ccdask.cli._main import COMMANDS, build_parser
from tests.helpers import REAL

HEAVY = ("numpy", "astropy", "astropy.table", "dask", "dask.array", "distributed", "numba", "zarr", "scipy")


def imported_by(*args: str, cwd: str | None = None) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """The modules a ``python -X importtime -m ccdask ARGS`` process imported, and the process."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ccdask", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )
    modules = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                modules.add(name)
    return modules, done


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("reduce", "--help"), ("combine", "--help")])
def test_version_and_help_import_nothing_heavy(args):
    modules, done = imported_by(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ccdask.cli._main" in modules  # the parse of importtime's output works
    if args == ("--version",):
        assert done.stdout.startswith("ccdask ")
        assert not {m for m in modules if m.startswith("ccdask.cli._") and m != "ccdask.cli._main"}
    if args[0] == "--help":
        assert all(name in done.stdout for name in COMMANDS)
    if args[0] in ("reduce", "combine"):
        assert f"usage: ccdask {args[0]}" in done.stdout
        return  # a command's module may import its configuration types (combine's: numba-free)
    assert not set(HEAVY) & modules


def test_catalog_imports_the_fits_reader_only():
    if not REAL.is_dir():
        pytest.skip(f"real frames not available: {REAL} is absent (set CCDASK_REAL_DATA)")
    modules, done = imported_by("catalog", str(REAL))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "astropy.io.fits" in modules and "ccdask.catalog" in modules
    assert "chip image(s)" in done.stdout and "totals:" in done.stdout
    assert not {"astropy.table", "dask", "dask.array", "distributed", "numba", "zarr"} & modules


def test_every_command_registers_the_help_of_the_table():
    """``ccdask --help`` lists each command from the table without importing it: the table's
    help must be what the command's own parser says."""
    full = build_parser()
    sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == list(COMMANDS)
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert helps == {name: text for name, (_module, text) in COMMANDS.items()}
    # with one command in full, the others are one-line entries (parsing still works)
    light = build_parser(only="config")
    assert light.parse_args(["config", "--defaults"]).defaults
    with pytest.raises(SystemExit):
        light.parse_args(["catalog", "--long", "x"])  # its options are not registered here


def test_import_ccdask_is_lazy_and_names_resolve():
    code = (
        "import sys, ccdask; heavy = [m for m in sys.argv[1:] if m in sys.modules]; "
        "assert not heavy, heavy; "
        "import ccdask.combine._kernels; assert callable(ccdask.combine), ccdask.combine; "
        "assert ccdask.Catalog.__name__ == 'Catalog' and ccdask.reduce.__module__ == 'ccdask.night._reduce'; "
        "assert 'reduce' in dir(ccdask); print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code, *HEAVY], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
