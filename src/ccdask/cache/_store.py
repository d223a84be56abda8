"""The content-addressed zarr (v3) store of calibration masters.

>>> cache = MasterCache("OUT/cache.zarr")                             # doctest: +SKIP
>>> key = master_key("bias", identities, params, chip="ccd1")          # doctest: +SKIP
>>> master = cache.get(key) or cache.put(key, combine_bias(...))       # doctest: +SKIP

Layout
------
``<root>/zarr.json`` marks the folder as a ccdask cache (a zarr group). Each master is a group
named by its key, ``<root>/<key>/``, holding the arrays ``data`` (float32), and when present
``variance`` (float32) and ``count`` (int16, or int32 above 32767 frames), compressed with
Blosc-zstd (level 3, byte shuffle) and chunked like the master when its dask chunks form a
regular grid of 256² to 4096² pixels (else 1024²), with zarr ``dimension_names`` ``("y", "x")``
(so ``xarray.open_zarr(root, group=key)`` opens an entry as a Dataset). The group attributes hold ``kind``,
``chip``, ``filter``, ``exptime``, ``ncombine``, ``shape``, ``created`` (UTC ISO),
``ccdask_version``, the provenance ``meta`` (inputs, parameters), per array the checksum of its
``zarr.json`` and of every chunk file, and ``attrs_sha256``, a checksum of all of that. Names
starting with a dot are never entries: ``.tmp-<key>-<id>`` (a write in progress, or left by a
killed run), ``.damaged-<key>-<id>`` (an entry that failed verification, kept a day for
inspection), ``.trash-*`` (being deleted) and ``.records/`` (small JSON measurements keyed like
masters, such as the read noise measured in a night's biases: :meth:`MasterCache.get_record`).

Writing
-------
A put writes into ``.tmp-<key>-<id>/`` and renames it to ``<key>/`` when every chunk, checksum
and attribute is on disk: ``os.rename`` of a folder is atomic within one file system, so a
reader sees a whole entry or none. Chunks are written by the dask tasks that compute them, on
whatever worker runs them (threads, local processes or cluster nodes sharing the file system);
only checksums travel back to the client. If another writer renamed the same key first, its
entry is kept and ours deleted. The pipeline builds several writes into one graph with
:meth:`MasterCache.store_graph`::

    pending = [cache.store_graph(key, m) for key, m in todo.items()]
    try:
        results = dask.compute(*(p.writes for p in pending))      # one compute, many masters
    except BaseException:
        for p in pending:
            p.abort()
        raise
    masters = [p.finalize(r) for p, r in zip(pending, results)]  # rename, lazy read-back

Reading
-------
:meth:`MasterCache.get` verifies an entry (by default every chunk file's sha256, streamed one
file at a time, without decompressing: 40-100 ms for a 4096×2048 master with variance and
count, ~47 MB stored, i.e. ~1 GB/s; cheap next to stacking, so it is the default)
and returns a :class:`~ccdask.frame.Master` whose arrays are lazy ``dask.array.from_zarr``
reads. A damaged entry (missing, truncated or altered chunk, edited attributes or metadata,
unreadable metadata) is reported with a :class:`~ccdask.errors.CcdaskWarning`, moved aside and
treated as absent, so the caller rebuilds it. Verification happens at ``get``; a chunk damaged
after that moment is not detected by the lazy reads.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from .._version import __version__
from ..errors import CacheError, CcdaskWarning
from ..frame import Master
from ._io import (
    DamagedEntry,
    array_grid,
    attrs_checksum,
    choose_chunks,
    chunk_key,
    metadata_digest,
    read_json,
    verify_entry,
    write_block,
)
from ._key import (
    CACHE_FORMAT,
    CacheKeyError,
    check_key,
    input_identity,
    master_key,
    normalise,
)

__all__ = [
    "CACHE_FORMAT",
    "CacheEntry",
    "CacheKeyError",
    "MasterCache",
    "PendingPut",
    "input_identity",
    "master_key",
]

TMP_MAX_AGE = 3600.0
"""Seconds after which an unowned ``.tmp-*`` folder counts as left over by a killed run."""

DAMAGED_KEEP = 86400.0
"""Seconds a damaged entry is kept aside for inspection before :meth:`MasterCache.sweep` deletes it."""

_MARKER = "ccdask_master_cache"
_ROOT_LOCK = threading.Lock()
_OWNER = "owner.json"


def _compressor() -> Any:
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


def _now() -> datetime:
    return datetime.now(UTC)


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _tree_mtime(path: Path) -> float:
    """Newest modification time of anything under ``path`` (0 if it vanished)."""
    newest = 0.0
    for dirpath, _dirs, files in os.walk(path):
        for name in (".", *files):
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
    return newest


def _owner_alive(tmp: Path) -> bool:
    """Whether the process that created a ``.tmp-*`` folder is still running on this host."""
    try:
        owner = read_json(tmp / _OWNER)
    except (OSError, ValueError):
        return False
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False  # another machine: only the age rule applies
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class CacheEntry:
    """One master in the cache, as listed by :meth:`MasterCache.entries` (no verification).

    ``size`` is bytes on disk; ``last_used`` is the entry folder's modification time, set when
    the entry is written or read by :meth:`MasterCache.get`; ``problem`` is set (and the other
    fields may be ``None``) when the entry's metadata cannot be read.
    """

    key: str
    kind: str | None
    chip: str | None
    filter: str | None
    exptime: float | None
    shape: tuple[int, ...] | None
    ncombine: int | None
    created: datetime | None
    last_used: datetime
    size: int
    path: Path
    problem: str | None = None


class PendingPut:
    """A master being written: the dask work to compute, then :meth:`finalize` or :meth:`abort`.

    Made by :meth:`MasterCache.store_graph`. ``writes`` is a dask array of Python objects (one
    element per chunk, holding that chunk's checksums); compute it (alone or together with
    other collections in one ``dask.compute``/``Client.compute``) and pass the computed value
    to :meth:`finalize`, which writes the attributes, renames the entry into place and returns
    the master read back lazily from the cache. If the computation fails, call :meth:`abort`
    to delete the temporary folder (a killed process leaves it to :meth:`MasterCache.sweep`).
    Used as a context manager, it aborts on leaving the block unless finalized.

    Attributes
    ----------
    key : str
        The cache key.
    writes : dask.array.Array
        The collection to compute; its tasks are named ``cache-put-<kind>-<chip>-<id>``.
    tmp : pathlib.Path
        The temporary entry folder.
    """

    def __init__(
        self,
        cache: MasterCache,
        key: str,
        master: Master,
        tmp: Path,
        writes: da.Array,
        arrays: dict[str, dict[str, Any]],
        meta: Any,
    ) -> None:
        self.cache = cache
        self.key = key
        self.tmp = tmp
        self.writes = writes
        self._master = master
        self._arrays = arrays
        self._meta = meta
        self._state = "pending"

    def __repr__(self) -> str:
        m = self._master
        return f"<PendingPut {self.key} {m.kind} chip {m.chip} {self._state}>"

    def __enter__(self) -> PendingPut:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._state == "pending":
            self.abort()

    def abort(self) -> None:
        """Delete the temporary folder (idempotent; nothing happens after :meth:`finalize`)."""
        if self._state == "pending":
            self._state = "aborted"
            self.cache._discard(self.tmp)

    def finalize(self, written: Any) -> Master:
        """Record the checksums, rename the entry into place and return the cached master.

        Parameters
        ----------
        written : numpy.ndarray
            The computed value of :attr:`writes`.

        Returns
        -------
        Master
            The master with lazy reads from ``<root>/<key>`` (another writer's entry if it
            finished first; the two are interchangeable by construction of the key).

        Raises
        ------
        CacheError
            If the results do not match this put, or the entry cannot be renamed into place.
        """
        if self._state != "pending":
            raise CacheError(f"cache put of {self.key} was already {self._state}")
        try:
            attrs = self._attributes(written)
            self._write_attributes(attrs)
        except BaseException:
            self.abort()
            raise
        self._state = "finalized"
        return self.cache._install(self.key, self.tmp)

    def _attributes(self, written: Any) -> dict[str, Any]:
        m = self._master
        written = np.asarray(written, dtype=object)
        grid = next(iter(self._arrays.values()))["grid"]
        if written.shape != tuple(grid):
            raise CacheError(
                f"cache put of {self.key}: expected {grid} chunk results, got shape {written.shape}"
                " (pass the computed value of PendingPut.writes)"
            )
        arrays: dict[str, Any] = {}
        for name, spec in self._arrays.items():
            sums = {}
            for index in np.ndindex(written.shape):
                sums[chunk_key(index)] = list(written[index][name])
            arrays[name] = {
                "dtype": spec["dtype"],
                "metadata_sha256": metadata_digest(self.tmp / name),
                "chunks": sums,
            }
        attrs: dict[str, Any] = {
            "ccdask_cache_format": CACHE_FORMAT,
            "key": self.key,
            "kind": m.kind,
            "chip": m.chip,
            "filter": m.filter,
            "exptime": None if m.exptime is None else float(m.exptime),
            "ncombine": int(m.ncombine),
            "shape": [int(s) for s in m.data.shape],
            "created": _now().isoformat(timespec="seconds"),
            "ccdask_version": __version__,
            "meta": self._meta,
            "arrays": arrays,
        }
        attrs = normalise(attrs, "attributes")
        attrs["attrs_sha256"] = attrs_checksum(attrs)
        return attrs

    def _write_attributes(self, attrs: dict[str, Any]) -> None:
        import zarr

        group = zarr.open_group(store=str(self.tmp), mode="r+")
        group.attrs.put(attrs)
        stored = read_json(self.tmp / "zarr.json").get("attributes", {})
        if attrs_checksum(stored) != attrs["attrs_sha256"]:
            raise CacheError(f"cache put of {self.key}: attributes changed on their way to disk")
        (self.tmp / _OWNER).unlink(missing_ok=True)


class MasterCache:
    """A zarr v3 store of masters, addressed by :func:`master_key`.

    Parameters
    ----------
    root : path-like
        The cache folder (e.g. ``OUT/cache.zarr``). It is created on the first put; an existing
        folder must be empty or already a ccdask cache.
    chunks : tuple of int, optional
        Chunk shape of the stored arrays (clipped to the master's shape). By default a master's
        own dask chunks when they form a regular grid of 256² to 4096² pixels, else 1024².
    """

    def __init__(self, root: str | os.PathLike[str], *, chunks: tuple[int, ...] | None = None) -> None:
        self.root = Path(root).absolute()
        if chunks is not None and (not chunks or any(int(c) < 1 for c in chunks)):
            raise CacheError(f"chunk shape {chunks!r} must be positive integers")
        self.chunks = None if chunks is None else tuple(int(c) for c in chunks)

    def __repr__(self) -> str:
        return f"MasterCache({str(self.root)!r})"

    def __contains__(self, key: str) -> bool:
        """Whether an entry folder exists for ``key`` (not verified)."""
        return (self.root / check_key(key) / "zarr.json").is_file()

    # ----------------------------------------------------------------------------------- root

    def is_cache(self) -> bool:
        """Whether ``root`` exists and is marked as a ccdask master cache."""
        try:
            return bool(read_json(self.root / "zarr.json").get("attributes", {}).get(_MARKER))
        except (OSError, ValueError):
            return False

    def _ensure_root(self) -> None:
        with _ROOT_LOCK:  # two threads of one process creating the same cache
            if self.is_cache():
                return
            if self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
                raise CacheError(f"{self.root}: exists and is not a ccdask master cache; refusing to write there")
            import zarr

            try:
                zarr.open_group(store=str(self.root), mode="w-", attributes={_MARKER: CACHE_FORMAT})
            except Exception as exc:
                # another process may have created it at the same moment: then all is well
                if self.is_cache():
                    return
                raise CacheError(f"{self.root}: cannot create the master cache ({exc})") from exc

    # -------------------------------------------------------------------------------- writing

    def store_graph(self, key: str, master: Master) -> PendingPut:
        """Prepare a put without computing: the pipeline's way to write many masters at once.

        Creates ``<root>/.tmp-<key>-<id>/`` with empty arrays (metadata only) and returns a
        :class:`PendingPut` whose ``writes`` collection computes the master chunk by chunk and
        writes each chunk from the worker that computed it. Nothing is visible under ``key``
        until :meth:`PendingPut.finalize`. Stale temporary folders of killed runs are swept
        first (see :meth:`sweep`).

        Parameters
        ----------
        key : str
            From :func:`master_key`.
        master : Master
            Lazy (dask) or in-memory (numpy) ``data`` and optional ``variance``/``count`` of one
            shape; ``meta`` must be JSON-able (see :func:`~ccdask.cache._key.normalise`).

        Returns
        -------
        PendingPut

        Raises
        ------
        CacheKeyError
            Malformed key or non-JSON-able ``meta`` (before anything is written).
        CacheError
            Arrays of different shapes, an empty master, or an unusable cache folder.
        """
        import zarr

        check_key(key)
        meta = normalise(dict(master.meta), "master.meta")
        parts = {"data": master.data, "variance": master.variance, "count": master.count}
        arrays = {n: da.asarray(a) for n, a in parts.items() if a is not None}
        shape = arrays["data"].shape
        if any(a.shape != shape for a in arrays.values()) or 0 in shape or not shape:
            shapes = ", ".join(f"{n} {a.shape}" for n, a in arrays.items())
            raise CacheError(f"cache put of {key} ({master.kind}, chip {master.chip}): bad shapes {shapes}")
        if self.chunks is None:
            chunks = choose_chunks(arrays["data"])
        elif len(self.chunks) != len(shape):
            raise CacheError(f"cache chunk shape {self.chunks} does not fit a {len(shape)}-D master")
        else:
            chunks = tuple(min(c, s) for c, s in zip(self.chunks, shape, strict=True))
        grid = array_grid(shape, chunks)
        dtypes = {
            "data": "float32",
            "variance": "float32",
            "count": "int16" if master.ncombine <= np.iinfo(np.int16).max else "int32",
        }
        fills = {"data": float("nan"), "variance": float("nan"), "count": 0}

        self._ensure_root()
        self.sweep()
        tmp = self.root / f".tmp-{key}-{uuid.uuid4().hex[:12]}"
        try:
            group = zarr.open_group(store=str(tmp), mode="w-")
            for name in arrays:
                group.create_array(
                    name,
                    shape=shape,
                    dtype=dtypes[name],
                    chunks=chunks,
                    compressors=_compressor(),
                    fill_value=fills[name],
                    chunk_key_encoding={"name": "default", "separator": "/"},
                    config={"write_empty_chunks": True},
                    dimension_names=("y", "x"),  # so xarray.open_zarr(root, group=key) opens it
                )
            owner = {"host": socket.gethostname(), "pid": os.getpid()}
            (tmp / _OWNER).write_text(json.dumps(owner), encoding="utf-8")
        except OSError as exc:
            self._discard(tmp)
            raise CacheError(f"{self.root}: cannot create a cache entry ({exc})") from exc

        names = tuple(arrays)
        writes = da.map_blocks(
            write_block,
            *(a.rechunk(chunks) for a in arrays.values()),
            entry=str(tmp),
            names=names,
            dtypes=tuple(dtypes[n] for n in names),
            chunk_shape=chunks,
            dtype=object,
            chunks=tuple((1,) * n for n in grid),
            meta=np.empty((0,) * len(shape), dtype=object),
            name=f"cache-put-{master.kind}-{master.chip}-{tmp.name[-12:]}",
        )
        spec = {n: {"dtype": dtypes[n], "grid": grid} for n in names}
        return PendingPut(self, key, master, tmp, writes, spec, meta)

    def put(self, key: str, master: Master, *, compute: bool = True, **compute_kwargs: Any) -> Any:
        """Write a master under ``key`` atomically and return it read back lazily.

        Parameters
        ----------
        key : str
            From :func:`master_key`.
        master : Master
            The master; its dask arrays are computed chunk by chunk and written by the workers.
        compute : bool, optional
            ``False`` returns the :class:`PendingPut` instead (same as :meth:`store_graph`).
        **compute_kwargs
            Passed to ``dask.compute`` (e.g. ``scheduler="sync"``); by default the current
            scheduler (a ``distributed.Client`` if one is the default) does the work.

        Returns
        -------
        Master or PendingPut
            The cached master (lazy reads from the store), or the pending put.

        Raises
        ------
        Exception
            Whatever computing the master raised; the temporary folder is then removed and no
            entry appears.
        """
        pending = self.store_graph(key, master)
        if not compute:
            return pending
        with pending:
            (written,) = dask.compute(pending.writes, **compute_kwargs)
            return pending.finalize(written)

    def put_many(self, masters: Mapping[str, Master], **compute_kwargs: Any) -> dict[str, Master]:
        """Write several masters with one ``dask.compute`` call; ``{key: cached master}``."""
        pending: list[PendingPut] = []
        try:
            for key, m in masters.items():
                pending.append(self.store_graph(key, m))
            results = dask.compute(*(p.writes for p in pending), **compute_kwargs)
            return {p.key: p.finalize(r) for p, r in zip(pending, results, strict=True)}
        finally:
            for p in pending:
                p.abort()  # no-op for the finalized ones

    def _install(self, key: str, tmp: Path) -> Master:
        """Rename a finished temporary entry to ``key``; keep a concurrent writer's entry."""
        final = self.root / key
        for _attempt in range(3):
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not final.exists():
                    self._discard(tmp)
                    raise CacheError(f"{final}: cannot install cache entry ({exc})") from exc
                theirs = self.get(key, verify=False)
                if theirs is not None:  # a concurrent writer finished first: keep theirs
                    self._discard(tmp)
                    return theirs
                continue  # theirs was damaged and moved aside: try ours again
            with contextlib.suppress(OSError):
                os.utime(final)
            try:
                return self._open(key, read_json(final / "zarr.json")["attributes"])
            except (DamagedEntry, OSError, ValueError, KeyError) as exc:
                raise CacheError(f"{final}: cannot read back the entry just written ({exc})") from exc
        self._discard(tmp)
        raise CacheError(f"{final}: cannot install cache entry (keeps being replaced)")

    # -------------------------------------------------------------------------------- reading

    def get(self, key: str, *, verify: bool = True) -> Master | None:
        """The master stored under ``key``, verified, with lazy arrays; ``None`` if absent.

        Parameters
        ----------
        key : str
            From :func:`master_key`.
        verify : bool, optional
            ``True`` (default) re-hashes every chunk file, streamed (40-100 ms per
            4096×2048 master). ``False`` still checks the attributes' checksum, the arrays'
            metadata and that every chunk file exists with its written length (catches
            missing and truncated chunks, not flipped bytes).

        Returns
        -------
        Master or None
            ``None`` when there is no entry, or when the entry is damaged: a
            :class:`~ccdask.errors.CcdaskWarning` then names the key, kind, chip and what is
            wrong, and the entry is moved aside so the caller rebuilds it.
        """
        path = self.root / check_key(key)
        attrs: dict[str, Any] = {}
        try:
            try:
                doc = read_json(path / "zarr.json")
            except FileNotFoundError:
                if not path.exists():
                    return None
                raise DamagedEntry("group metadata zarr.json is missing") from None
            except (OSError, ValueError) as exc:
                raise DamagedEntry(f"group metadata zarr.json is unreadable ({exc})") from None
            found = doc.get("attributes")
            if not isinstance(found, dict):
                raise DamagedEntry("group metadata zarr.json holds no attributes")
            attrs = found
            try:
                verify_entry(path, attrs, chunks=verify)
                master = self._open(key, attrs)
            except (KeyError, TypeError, ValueError, OSError) as exc:
                raise DamagedEntry(f"cannot open the entry ({type(exc).__name__}: {exc})") from None
        except DamagedEntry as exc:
            self._quarantine(key, attrs, str(exc))
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # last used, for `clear --older-than` (best effort: cache may be read-only)
        return master

    def _open(self, key: str, attrs: dict[str, Any]) -> Master:
        import zarr
        from zarr.storage import LocalStore

        store = LocalStore(self.root, read_only=True)
        kind, chip = attrs["kind"], attrs["chip"]
        lazy: dict[str, da.Array | None] = {"variance": None, "count": None}
        for name in attrs["arrays"]:
            z = zarr.open_array(store=store, path=f"{key}/{name}", mode="r")
            if list(z.shape) != attrs["shape"]:
                raise DamagedEntry(f"array {name!r} has shape {z.shape}, attributes say {attrs['shape']}")
            lazy[name] = da.from_zarr(z, name=f"master-{kind}-{chip}-{name}-{key}")
        meta = dict(attrs.get("meta") or {})
        meta["cache_key"] = key
        return Master(
            kind=kind,
            chip=chip,
            data=lazy["data"],
            variance=lazy["variance"],
            count=lazy["count"],
            ncombine=int(attrs["ncombine"]),
            filter=attrs.get("filter"),
            exptime=attrs.get("exptime"),
            meta=meta,
        )

    def _quarantine(self, key: str, attrs: dict[str, Any], reason: str) -> None:
        path = self.root / key
        dest = self.root / f".damaged-{key}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, dest)
            with contextlib.suppress(OSError):
                os.utime(dest)  # kept DAMAGED_KEEP seconds from now, for inspection
            where = f"moved aside to {dest}"
        except FileNotFoundError:
            where = "already moved aside by another process"
        except OSError as exc:
            where = f"could not be moved aside ({exc}); ignoring it"
        kind = attrs.get("kind", "?") if isinstance(attrs, dict) else "?"
        chip = attrs.get("chip", "?") if isinstance(attrs, dict) else "?"
        warnings.warn(
            f"master cache entry {key} ({kind} master, chip {chip}) is damaged: {reason}; {where}; it will be rebuilt",
            CcdaskWarning,
            stacklevel=3,
        )

    # ------------------------------------------------------------------------------- records

    def _record_path(self, kind: str, key: str) -> Path:
        if not kind.isidentifier():
            raise CacheError(f"record kind {kind!r} must be a plain name")
        return self.root / ".records" / f"{kind}-{check_key(key)}.json"

    def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        """A small JSON record stored with :meth:`put_record` (None when absent or unreadable).

        Records hold measurements that are not masters but are as costly to redo on a rerun
        (the read noise measured in the biases' overscans), keyed by their inputs like a master;
        they live in ``<root>/.records/`` and are never listed as entries.
        """
        try:
            value = json.loads(self._record_path(kind, key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def put_record(self, kind: str, key: str, value: Mapping[str, Any]) -> None:
        """Store a JSON-able mapping under ``(kind, key)`` atomically (replacing any)."""
        from ..utils import atomic_write_text

        text = json.dumps(normalise(dict(value), f"{kind} record"), sort_keys=True)
        self._ensure_root()
        atomic_write_text(self._record_path(kind, key), text)

    # ------------------------------------------------------------------------------- listing

    def _entry_dirs(self) -> Iterator[Path]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.iterdir()):
            if path.is_dir() and not path.name.startswith("."):
                try:
                    check_key(path.name)
                except CacheKeyError:
                    continue
                yield path

    def entries(self) -> list[CacheEntry]:
        """Every entry (not verified, temporary and damaged folders excluded), by kind and chip."""
        out = []
        for path in self._entry_dirs():
            try:
                last_used = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            except FileNotFoundError:
                continue  # removed meanwhile
            size = _tree_size(path)
            try:
                a = read_json(path / "zarr.json")["attributes"]
                entry = CacheEntry(
                    key=path.name,
                    kind=a["kind"],
                    chip=a["chip"],
                    filter=a.get("filter"),
                    exptime=a.get("exptime"),
                    shape=tuple(a["shape"]),
                    ncombine=a.get("ncombine"),
                    created=datetime.fromisoformat(a["created"]),
                    last_used=last_used,
                    size=size,
                    path=path,
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                entry = CacheEntry(
                    path.name,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    last_used,
                    size,
                    path,
                    problem=f"unreadable metadata ({type(exc).__name__}: {exc})",
                )
            out.append(entry)
        out.sort(key=lambda e: (e.kind or "~", e.chip or "", e.filter or "", e.key))
        return out

    # ------------------------------------------------------------------------------ removing

    def _discard(self, path: Path) -> None:
        """Make ``path`` vanish at once (rename to ``.trash-*``), then delete it."""
        trash = self.root / f".trash-{uuid.uuid4().hex[:12]}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        except OSError:
            trash = path
        shutil.rmtree(trash, ignore_errors=True)

    def remove(self, key: str) -> bool:
        """Delete the entry ``key``; ``True`` if there was one."""
        path = self.root / check_key(key)
        if not path.exists():
            return False
        self._discard(path)
        return True

    def clear(
        self,
        *,
        kind: str | None = None,
        older_than: float | timedelta | None = None,
        now: datetime | None = None,
    ) -> int:
        """Delete entries, all or those of one ``kind`` and/or unused for ``older_than``.

        Parameters
        ----------
        kind : str, optional
            Only entries of this kind (``bias``, ``dark``, ``flat``...).
        older_than : float or timedelta, optional
            Only entries last used (written or read) longer ago than this many days.
        now : datetime, optional
            The reference time (default: now, UTC).

        Returns
        -------
        int
            Number of entries deleted. Left-over temporary folders are swept too (see
            :meth:`sweep`); without ``kind``, entries moved aside as damaged are deleted too.
        """
        now = now or _now()
        if older_than is not None and not isinstance(older_than, timedelta):
            older_than = timedelta(days=float(older_than))
        removed = 0
        for entry in self.entries():
            if kind is not None and entry.kind != kind:
                continue
            if older_than is not None and now - entry.last_used <= older_than:
                continue
            removed += self.remove(entry.key)
        damaged_age = None
        if kind is None:
            damaged_age = 0.0 if older_than is None else older_than.total_seconds()
        self.sweep(damaged_max_age=damaged_age)
        return removed

    def sweep(self, *, max_age: float = TMP_MAX_AGE, damaged_max_age: float | None = None) -> int:
        """Delete left-overs: ``.trash-*``, stale ``.tmp-*`` and old ``.damaged-*`` folders.

        A ``.tmp-*`` folder is stale when its owner process (recorded inside it) is no longer
        running on this host and nothing in it changed for ``max_age`` seconds; one made on
        another host is judged by age alone. Called by every put and by :meth:`clear`.

        Parameters
        ----------
        max_age : float, optional
            Seconds (default one hour).
        damaged_max_age : float, optional
            Seconds to keep damaged entries (default :data:`DAMAGED_KEEP`, one day).

        Returns
        -------
        int
            Number of folders deleted.
        """
        if not self.root.is_dir():
            return 0
        damaged_max_age = DAMAGED_KEEP if damaged_max_age is None else damaged_max_age
        now = time.time()
        removed = 0
        for path in self.root.iterdir():
            name = path.name
            if name.startswith(".trash-"):
                shutil.rmtree(path, ignore_errors=True)
            elif name.startswith(".tmp-"):
                if _owner_alive(path) or now - _tree_mtime(path) <= max_age:
                    continue
                self._discard(path)
            elif name.startswith(".damaged-"):
                if now - _tree_mtime(path) <= damaged_max_age:
                    continue
                self._discard(path)
            else:
                continue
            removed += 1
        return removed
