"""``ccdask cache ls|clear``: list or delete masters in a cache.

``--cache DIR`` names the cache folder, or an output folder holding ``cache.zarr``; the default
is ``$CCDASK_CACHE`` if set, else ``./cache.zarr``. ``--kind`` and ``--older-than DAYS`` (days
since the entry was last written or read) select entries for both subcommands.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ..cache._store import CacheEntry, MasterCache
from ..errors import CacheError

__all__ = ["register", "run"]


def _cache_dir(arg: str | None) -> Path:
    path = Path(arg or os.environ.get("CCDASK_CACHE") or "cache.zarr")
    if not (path / "zarr.json").is_file() and (path / "cache.zarr").is_dir():
        path = path / "cache.zarr"  # an output folder of `ccdask reduce`
    return path


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``cache`` command (with ``ls`` and ``clear``) to a ``ccdask`` subparsers object.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``ArgumentParser.add_subparsers`` returned.

    Returns
    -------
    argparse.ArgumentParser
        The ``cache`` parser; parsed namespaces carry ``func=run``.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cache",
        metavar="DIR",
        help="cache folder, or an output folder holding cache.zarr (default: $CCDASK_CACHE or ./cache.zarr)",
    )
    common.add_argument("--kind", help="only masters of this kind (bias, dark, flat...)")
    common.add_argument(
        "--older-than",
        type=float,
        metavar="DAYS",
        help="only masters not written or read for more than DAYS days",
    )
    parser = subparsers.add_parser("cache", help="list or delete cached masters")
    actions = parser.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    actions.add_parser("ls", parents=[common], help="list cached masters")
    actions.add_parser("clear", parents=[common], help="delete cached masters")
    parser.set_defaults(func=run)
    return parser


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def _row(e: CacheEntry) -> list[str]:
    def when(t):
        return "-" if t is None else t.strftime("%Y-%m-%d %H:%M")

    if e.problem:
        return [e.key, "?", "?", "-", "-", "-", _size(e.size), "-", when(e.last_used), e.problem]
    shape = "x".join(str(s) for s in e.shape or ())
    return [
        e.key,
        e.kind or "?",
        e.chip or "?",
        e.filter or "-",
        shape,
        str(e.ncombine),
        _size(e.size),
        when(e.created),
        when(e.last_used),
        "",
    ]


def _table(entries: list[CacheEntry]) -> str:
    head = ["KEY", "KIND", "CHIP", "FILTER", "SHAPE", "N", "SIZE", "CREATED (UTC)", "LAST USED", ""]
    rows = [head, *(_row(e) for e in entries)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def run(args: argparse.Namespace) -> int:
    """Execute ``ccdask cache ls|clear`` for parsed ``args``; returns the exit code (0).

    Raises
    ------
    CacheError
        When the folder is not a ccdask master cache (nothing is listed or deleted there).
    """
    cache = MasterCache(_cache_dir(args.cache))
    if not cache.is_cache():
        raise CacheError(f"{cache.root}: no ccdask master cache here (use --cache DIR)")
    older = None if args.older_than is None else timedelta(days=args.older_than)
    now = datetime.now(UTC)
    selected = [
        e
        for e in cache.entries()
        if (args.kind is None or e.kind == args.kind) and (older is None or now - e.last_used > older)
    ]
    if args.cache_command == "ls":
        if selected:
            print(_table(selected))
        total = sum(e.size for e in selected)
        names = [p.name for p in cache.root.iterdir()]
        extra = [
            f"{n} {what}"
            for n, what in (
                (sum(n.startswith(".damaged-") for n in names), "damaged entries kept aside"),
                (sum(n.startswith(".tmp-") for n in names), "unfinished writes"),
            )
            if n
        ]
        tail = f" ({', '.join(extra)})" if extra else ""
        print(f"{len(selected)} master(s), {_size(total)} in {cache.root}{tail}")
        return 0
    swept = cache.sweep(damaged_max_age=0.0 if args.kind is None else None)
    removed = cache.clear(kind=args.kind, older_than=older, now=now)
    extra = f" and {swept} left-over folder(s)" if swept else ""
    freed = sum(e.size for e in selected)
    print(f"removed {removed} master(s){extra} from {cache.root}, freed {_size(freed)}")
    return 0
