"""Low-level pieces of the master cache: chunk layout, the block writer, checksums, verification.

Checksums
---------
Each chunk is checksummed *as stored*: the sha256 of the encoded (compressed) chunk file, with
its length. The writer task computes it right after writing its chunk, by reading the file back
(it is in the page cache), so no second pass over the data is needed and nothing but a few
dozen bytes per chunk travels back to the client. Verification re-hashes the chunk files one
at a time in 1 MiB reads: memory stays flat, nothing is decompressed, and the cost is reading
the compressed entry once (sha256 runs at about 1 GB/s on one core). A missing chunk file, a
truncated or extended one, or any flipped byte changes the digest.

Each array's ``zarr.json`` (shape, dtype, codecs, fill value) is checksummed as canonical JSON,
so an edited codec or shape is caught too; the group attributes carry a checksum of their own
canonical JSON (``attrs_sha256``), so an edited ``kind`` or ``ncombine`` is caught. These are
corruption checks, not a defence against someone who rewrites the checksums on purpose.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ._key import canonical_json

__all__ = [
    "DamagedEntry",
    "array_grid",
    "attrs_checksum",
    "choose_chunks",
    "chunk_key",
    "file_digest",
    "metadata_digest",
    "read_json",
    "verify_entry",
    "write_block",
]

_READ = 1 << 20
_MIN_CHUNK_ITEMS = 256 * 256
_MAX_CHUNK_ITEMS = 4096 * 4096
DEFAULT_CHUNK = 1024


class DamagedEntry(Exception):
    """Raised internally when an entry fails verification; the message says what is wrong."""


def choose_chunks(arr: da.Array) -> tuple[int, ...]:
    """Zarr chunk shape for a master: its own dask chunks if regular and sensible, else 1024².

    "Regular" means every chunk along an axis has the same size except a smaller last one
    (zarr needs a regular grid); "sensible" means between 256² and 4096² pixels per chunk.
    """
    dims = []
    regular = True
    for sizes in arr.chunks:
        first = sizes[0]
        if any(s != first for s in sizes[:-1]) or sizes[-1] > first:
            regular = False
        dims.append(first)
    n = math.prod(dims)
    whole = tuple(dims) == tuple(arr.shape)
    if regular and (whole or _MIN_CHUNK_ITEMS <= n <= _MAX_CHUNK_ITEMS) and n <= _MAX_CHUNK_ITEMS:
        return tuple(dims)
    return tuple(min(DEFAULT_CHUNK, s) for s in arr.shape)


def array_grid(shape: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, ...]:
    """Number of chunks along each axis."""
    return tuple(-(-s // c) for s, c in zip(shape, chunks, strict=True))


def chunk_key(index: tuple[int, ...]) -> str:
    """The zarr v3 default chunk key (``c/i/j``) of a chunk index, as written by this cache."""
    return "/".join(("c", *(str(int(i)) for i in index)))


def file_digest(path: Path) -> tuple[str, int]:
    """sha256 hex digest and length of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while block := f.read(_READ):
            h.update(block)
            n += len(block)
    return h.hexdigest(), n


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` (raises ``OSError``/``ValueError`` if unreadable)."""
    with open(path, "rb") as f:
        doc = json.loads(f.read())
    if not isinstance(doc, dict):
        raise ValueError(f"{path.name} holds a JSON {type(doc).__name__}, not an object")
    return doc


def metadata_digest(array_dir: Path) -> str:
    """sha256 of the canonical JSON of an array's ``zarr.json`` (shape, dtype, codecs...)."""
    doc = read_json(array_dir / "zarr.json")
    return hashlib.sha256(canonical_json(doc).encode("ascii")).hexdigest()


def attrs_checksum(attrs: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the entry attributes, without ``attrs_sha256`` itself."""
    body = {k: v for k, v in attrs.items() if k != "attrs_sha256"}
    return hashlib.sha256(canonical_json(body).encode("ascii")).hexdigest()


def write_block(
    *blocks: np.ndarray,
    entry: str,
    names: tuple[str, ...],
    dtypes: tuple[str, ...],
    chunk_shape: tuple[int, ...],
    block_id: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Write one chunk of each array of an entry and return the checksums of the written files.

    Runs inside a dask task, on whichever worker holds the blocks: it opens the arrays by path
    (only their small ``zarr.json`` is read), writes its chunk, then hashes the chunk file just
    written. Blocks are exactly one zarr chunk each, so no two tasks ever touch one file.

    Returns
    -------
    numpy.ndarray
        A ``(1, 1, ...)`` object array holding ``{name: [sha256, nbytes]}``.
    """
    import zarr

    assert block_id is not None
    root = Path(entry)
    region = tuple(slice(i * c, i * c + s) for i, c, s in zip(block_id, chunk_shape, blocks[0].shape, strict=True))
    key = chunk_key(block_id)
    sums: dict[str, list[Any]] = {}
    for name, dtype, block in zip(names, dtypes, blocks, strict=True):
        z = zarr.open_array(store=str(root / name), mode="r+")
        z[region] = np.ascontiguousarray(block, dtype=dtype)
        digest, nbytes = file_digest(root / name / key)
        sums[name] = [digest, nbytes]
    out = np.empty((1,) * len(block_id), dtype=object)
    out[(0,) * len(block_id)] = sums
    return out


def verify_entry(path: Path, attrs: dict[str, Any], *, chunks: bool = True) -> None:
    """Check an entry against the checksums in its attributes; raise :class:`DamagedEntry`.

    Parameters
    ----------
    path : Path
        The entry folder (``<root>/<key>``).
    attrs : dict
        Its group attributes, as read from ``zarr.json``.
    chunks : bool, optional
        Also re-hash every chunk file (streamed, one file at a time). ``False`` checks only the
        attributes, the arrays' metadata and that every chunk file exists with its length.
    """
    expected = attrs.get("attrs_sha256")
    if not isinstance(expected, str):
        raise DamagedEntry("attributes carry no checksum (attrs_sha256)")
    if attrs_checksum(attrs) != expected:
        raise DamagedEntry("attributes do not match their checksum (edited or corrupted zarr.json)")
    if attrs.get("key") != path.name:
        raise DamagedEntry(f"attributes belong to key {attrs.get('key')!r}, not {path.name!r}")
    arrays = attrs.get("arrays")
    if not isinstance(arrays, dict) or "data" not in arrays:
        raise DamagedEntry("attributes list no 'data' array")
    for name, info in arrays.items():
        adir = path / name
        try:
            meta = metadata_digest(adir)
        except (OSError, ValueError) as exc:
            raise DamagedEntry(f"array {name!r}: metadata unreadable ({exc})") from None
        if meta != info["metadata_sha256"]:
            raise DamagedEntry(f"array {name!r}: zarr.json does not match its checksum (edited)")
        for key, (digest, nbytes) in info["chunks"].items():
            fpath = adir / key
            try:
                size = fpath.stat().st_size
            except FileNotFoundError:
                raise DamagedEntry(f"array {name!r}: chunk {key} is missing") from None
            if size != nbytes:
                how = "truncated" if size < nbytes else "longer than written"
                raise DamagedEntry(f"array {name!r}: chunk {key} {how} ({size} of {nbytes} bytes)")
            if chunks:
                try:
                    found, _ = file_digest(fpath)
                except OSError as exc:
                    raise DamagedEntry(f"array {name!r}: chunk {key} unreadable ({exc})") from None
                if found != digest:
                    raise DamagedEntry(f"array {name!r}: chunk {key} fails its checksum (corrupted)")
