"""Lazy readers: one picklable :class:`ImageSource` per image HDU, lifted to dask arrays.

* plain FITS: each chunk memory-maps the file read-only, slices its region of the raw
  big-endian array and converts only that region (BZERO/BSCALE/BLANK applied per chunk);
* fpack: each chunk asks astropy for ``CompImageHDU.section[...]``, which decompresses only the
  tiles the region touches;
* gzip: one ``gunzip-<stem>-<hash>`` task per *file* decompresses it once, and every chunk of
  every HDU of that file decodes its region from those bytes. The key depends only on the
  file's identity, so the same file opened twice in one graph is decompressed once.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from astropy.io import fits
from dask.array.core import normalize_chunks

from ..errors import ConfigError, FitsReadError, SectionError, ShapeMismatchError, where
from ._decode import RAW_DTYPES, exact_integers, integer_dtype, physical, physical_into
from ._scan import HduInfo, HduKey, Kind, _Scan, _scan_all, scan_file, select_hdu

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "ImageSource",
    "default_chunks",
    "image_source",
    "open_chips",
    "open_frame",
    "open_stack",
]

DEFAULT_CHUNK_BYTES = 32 << 20
"""Target size of a default chunk (float32 bytes)."""

_FITS_SUFFIXES = (".gz", ".fz", ".fits", ".fit", ".fts")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.]+")


def _stem(path: str) -> str:
    """File name without FITS/compression suffixes, safe inside a dask key."""
    name = os.path.basename(path)
    changed = True
    while changed:
        changed = False
        for suffix in _FITS_SUFFIXES:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                changed = True
    return _UNSAFE.sub("_", name) or "file"


def _digest(*parts: object) -> str:
    return hashlib.sha1("\x00".join(map(str, parts)).encode()).hexdigest()


@dataclass(frozen=True)
class _FileRef:
    """Identity of a file as scanned; the argument of the shared gunzip task."""

    path: str
    size: int
    mtime_ns: int

    def check_unchanged(self, hdu: int | None = None) -> None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise FitsReadError(f"{where(self.path, hdu)}cannot read the file: {exc.strerror or exc}") from exc
        if st.st_size != self.size or st.st_mtime_ns != self.mtime_ns:
            raise FitsReadError(
                f"{where(self.path, hdu)}the file changed since it was scanned (size "
                f"{self.size} -> {st.st_size}, mtime_ns {self.mtime_ns} -> {st.st_mtime_ns})"
            )

    def __dask_tokenize__(self) -> str:
        return _digest(self.path, self.size, self.mtime_ns)


def _gunzip(ref: _FileRef) -> bytes:
    """Decompress a whole gzip-wrapped FITS file (the shared per-file task)."""
    ref.check_unchanged()
    try:
        with open(ref.path, "rb") as fh:
            return gzip.decompress(fh.read())
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise FitsReadError(f"{ref.path}: corrupt or truncated gzip stream: {exc}") from exc
    except OSError as exc:
        raise FitsReadError(f"{ref.path}: cannot read the file: {exc.strerror or exc}") from exc


def _check_slice(s: object, axis: str, source: ImageSource) -> slice:
    if not isinstance(s, slice):
        raise SectionError(f"{source.label}: {axis} must be a slice, not {type(s).__name__}")
    if s.step == 0:
        raise SectionError(f"{source.label}: {axis} slice step cannot be zero")
    return s


def _bounding(s: slice, n: int) -> tuple[slice, slice]:
    """Split a slice into a forward bounding box and the selection within it."""
    start, stop, step = s.indices(n)
    idx = range(start, stop, step)
    if len(idx) == 0:
        return slice(0, 0), slice(None)
    lo, hi = min(idx[0], idx[-1]), max(idx[0], idx[-1])
    return slice(lo, hi + 1), slice(None, None, step)


@dataclass(frozen=True)
class ImageSource:
    """One 2-D image HDU of one file: cheap, frozen and picklable; reads regions on demand.

    Build it with :meth:`from_info` or :func:`image_source`; lift it to dask with
    :meth:`to_dask`.

    Attributes
    ----------
    path : str
        Absolute path of the file.
    hdu : int
        Index of the HDU in the file.
    kind : {"plain", "gzip", "fpack"}
        How the pixels are stored.
    shape : tuple of int
        ``(ny, nx)``.
    bitpix, bzero, bscale, blank
        Stored ``BITPIX`` and scaling (see :class:`HduInfo`).
    data_offset : int or None
        Byte offset of the pixels in the (decompressed) FITS stream; None for fpack.
    size, mtime_ns : int
        The file's identity when scanned; reading a changed file raises ``FitsReadError``.
    name : str or None
        Chip name (CCDNAME, else EXTNAME) for labels; None if unnamed.
    """

    path: str
    hdu: int
    kind: Kind
    shape: tuple[int, int]
    bitpix: int
    bzero: float
    bscale: float
    blank: int | None
    data_offset: int | None
    size: int
    mtime_ns: int
    name: str | None = None

    @classmethod
    def from_info(cls, info: HduInfo) -> ImageSource:
        """The source reading the HDU described by ``info``."""
        name = info.header.get("CCDNAME", info.extname)
        return cls(
            path=info.path,
            hdu=info.index,
            kind=info.kind,
            shape=tuple(info.shape),
            bitpix=info.bitpix,
            bzero=info.bzero,
            bscale=info.bscale,
            blank=info.blank,
            data_offset=info.data_offset,
            size=info.size,
            mtime_ns=info.mtime_ns,
            name=None if name is None else str(name).strip(),
        )

    @property
    def label(self) -> str:
        """``'path[hdu]'`` for messages."""
        return f"{self.path}[{self.hdu}]"

    @property
    def token(self) -> str:
        """Deterministic identity from path, HDU, file size and modification time."""
        return _digest(self.path, self.hdu, self.size, self.mtime_ns)

    def __dask_tokenize__(self) -> str:
        return self.token

    @property
    def _file(self) -> _FileRef:
        return _FileRef(self.path, self.size, self.mtime_ns)

    # ----------------------------------------------------------------- reading

    @property
    def integer_dtype(self) -> np.dtype | None:
        """The type holding this image's physical values exactly when they are integers (masks),
        else None (see :func:`ccdask.io._decode.integer_dtype`)."""
        return integer_dtype(self.bitpix, self.bscale, self.bzero)

    def read_integers(self, rows: slice, cols: slice) -> np.ndarray:
        """Read ``image[rows, cols]`` as exact integer physical values (bit masks, DQ planes),
        of type :attr:`integer_dtype`; BLANK is not interpreted.

        Raises
        ------
        FitsReadError
            The image is not an exact-integer image, cannot be read or changed since it was
            scanned.
        """
        if self.integer_dtype is None:
            raise FitsReadError(
                f"{self.label}: not an integer image (BITPIX {self.bitpix}, BSCALE "
                f"{self.bscale:g}, BZERO {self.bzero:g})"
            )
        return self._read(rows, cols, integers=True)

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        """Read ``image[rows, cols]`` as float32 physical values.

        Parameters
        ----------
        rows, cols : slice
            Numpy slices along y and x (any non-zero step, including negative ones).

        Returns
        -------
        numpy.ndarray
            A new float32 array: ``raw * BSCALE + BZERO`` with ``BLANK`` pixels set to NaN.

        Raises
        ------
        FitsReadError
            The file cannot be read or changed since it was scanned.

        Notes
        -----
        Plain files memory-map only the region; fpack files decompress only the tiles the
        region touches; gzip files are decompressed whole on every call (use :meth:`to_dask`,
        which decompresses each file once per graph).
        """
        return self._read(rows, cols, integers=False)

    def read_into(self, rows: slice, cols: slice, out: np.ndarray) -> None:
        """Write :meth:`read` ``(rows, cols)`` into ``out`` (float32 of the region's shape, may be a
        view of a larger array), the same values bit for bit.

        Plain files decode the memory-mapped stored values straight into ``out``
        (:func:`ccdask.io._decode.physical_into`); fpack and gzip files read as :meth:`read`
        and copy.
        """
        raw = self.stored_pixels()
        if raw is None:
            out[...] = self.read(rows, cols)
            return
        self.decode_into(raw[_check_slice(rows, "rows", self), _check_slice(cols, "cols", self)], out)

    def stored_pixels(self) -> np.ndarray | None:
        """The whole image's stored (raw, big-endian, unscaled) values as a read-only memory map,
        for a plain file; None for fpack and gzip files. Slice it and :meth:`decode_into`.

        Raises
        ------
        FitsReadError
            The file cannot be mapped or changed since it was scanned.
        """
        if self.kind != "plain":
            return None
        self._file.check_unchanged(self.hdu)
        try:
            raw = np.memmap(
                self.path, dtype=RAW_DTYPES[self.bitpix], mode="r", offset=self.data_offset, shape=self.shape
            )
        except (OSError, ValueError) as exc:
            raise FitsReadError(f"{self.label}: cannot map the pixel data: {exc}") from exc
        return np.asarray(raw)  # a plain ndarray view of the map

    def read_stored_into(self, rows: slice, cols: slice, out: np.ndarray) -> None:
        """Read the stored (raw, unscaled) values of ``image[rows, cols]`` of a plain file into
        ``out``, with ``pread`` (no memory map: nothing of the file stays mapped in the process).

        Parameters
        ----------
        rows, cols : slice
            Forward slices with step 1 inside the image.
        out : numpy.ndarray
            C-contiguous array of the region's shape whose items are as wide as the stored ones
            (e.g. ``uint16`` for ``BITPIX = 16``); it receives the file's bytes unchanged (big-endian).

        Raises
        ------
        FitsReadError
            Not a plain file, the file changed since it was scanned, or it ends early.
        """
        if self.kind != "plain" or self.data_offset is None:
            raise FitsReadError(f"{self.label}: stored values can be read only from a plain (uncompressed) file")
        ny, nx = self.shape
        r0, r1, rstep = rows.indices(ny)
        c0, c1, cstep = cols.indices(nx)
        item = RAW_DTYPES[self.bitpix].itemsize
        if rstep != 1 or cstep != 1 or out.shape != (max(r1 - r0, 0), max(c1 - c0, 0)):
            raise SectionError(f"{self.label}: read_stored_into takes forward slices matching out {out.shape}")
        if out.itemsize != item or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous with {item}-byte items, got {out.dtype} {out.strides}")
        if out.size == 0:
            return
        self._file.check_unchanged(self.hdu)
        width = (c1 - c0) * item
        dest = memoryview(out.reshape(-1).view(np.uint8))
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise FitsReadError(f"{self.label}: cannot read the file: {exc.strerror or exc}") from exc
        try:
            if c0 == 0 and c1 == nx:  # whole rows: one contiguous run of bytes
                runs = [(self.data_offset + r0 * nx * item, dest)]
            else:
                runs = [
                    (self.data_offset + ((r0 + i) * nx + c0) * item, dest[i * width : (i + 1) * width])
                    for i in range(r1 - r0)
                ]
            for offset, view in runs:
                got = 0
                while got < len(view):
                    n = os.preadv(fd, [view[got:]], offset + got)
                    if n <= 0:
                        raise FitsReadError(
                            f"{self.label}: the file ends inside the pixel data (byte {offset + got} of {self.size})"
                        )
                    got += n
        except OSError as exc:
            raise FitsReadError(f"{self.label}: cannot read the pixel data: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)

    def decode_into(self, stored: np.ndarray, out: np.ndarray) -> None:
        """Physical float32 values of ``stored`` (a region of :meth:`stored_pixels`) into ``out``."""
        physical_into(stored, out, self.bitpix, self.bscale, self.bzero, self.blank)

    def _read(self, rows: slice, cols: slice, *, integers: bool) -> np.ndarray:
        rows = _check_slice(rows, "rows", self)
        cols = _check_slice(cols, "cols", self)
        if self.kind == "gzip":
            return self._decode(_gunzip(self._file), rows, cols, integers=integers)
        if self.kind == "fpack":
            return self._read_fpack(self.path, rows, cols, integers=integers)
        return self._read_plain(rows, cols, integers=integers)

    def _convert(self, stored: np.ndarray, integers: bool) -> np.ndarray:
        if integers:
            return exact_integers(stored, self.bitpix, self.bscale, self.bzero, stored=True)
        return physical(stored, self.bitpix, self.bscale, self.bzero, self.blank)

    def _read_plain(self, rows: slice, cols: slice, *, integers: bool = False) -> np.ndarray:
        self._file.check_unchanged(self.hdu)
        try:
            raw = np.memmap(
                self.path, dtype=RAW_DTYPES[self.bitpix], mode="r", offset=self.data_offset, shape=self.shape
            )
        except (OSError, ValueError) as exc:
            raise FitsReadError(f"{self.label}: cannot map the pixel data: {exc}") from exc
        region = np.asarray(raw[rows, cols])  # plain ndarray view: results are not memmaps
        return self._convert(region, integers)

    def _decode(self, buffer: bytes, rows: slice, cols: slice, *, integers: bool = False) -> np.ndarray:
        """Decode a region from the decompressed bytes of a gzip-wrapped file."""
        if self.data_offset is None:  # a tile-compressed HDU inside a gzip wrapper
            return self._read_fpack(io.BytesIO(buffer), rows, cols, integers=integers)
        count = self.shape[0] * self.shape[1]
        raw = np.frombuffer(buffer, dtype=RAW_DTYPES[self.bitpix], count=count, offset=self.data_offset).reshape(
            self.shape
        )
        return self._convert(raw[rows, cols], integers)

    def _read_fpack(self, fileobj: Any, rows: slice, cols: slice, *, integers: bool = False) -> np.ndarray:
        if isinstance(fileobj, str):
            self._file.check_unchanged(self.hdu)
        (ybox, ysel), (xbox, xsel) = _bounding(rows, self.shape[0]), _bounding(cols, self.shape[1])
        try:
            with fits.open(fileobj, mode="readonly") as hdul:
                region = np.asarray(hdul[self.hdu].section[ybox, xbox])
        except Exception as exc:  # astropy/codec errors on corrupt tiles
            raise FitsReadError(
                f"{self.label}: cannot decompress the tiles of "
                f"[{ybox.start}:{ybox.stop}, {xbox.start}:{xbox.stop}]: "
                f"{exc}"
            ) from exc
        region = region[ysel, xsel]
        if integers:  # astropy hands back physical values
            return exact_integers(region, self.bitpix, self.bscale, self.bzero, stored=False)
        out = region.astype(np.float32)
        if self.blank is not None and region.dtype.kind in "iu":
            # astropy leaves BLANK in place when it returns integers (no scaling applied).
            mask = region == self.blank * self.bscale + self.bzero
            out[mask] = np.nan
        return out

    # ----------------------------------------------------------------- dask

    def to_dask(self, chunks: Any = None, name: str | None = None, *, integers: bool = False) -> da.Array:
        """A lazy float32 dask array of the whole image (with ``integers``, of its exact integer
        values: :meth:`read_integers`).

        Parameters
        ----------
        chunks : optional
            Anything :func:`dask.array.core.normalize_chunks` accepts for this shape (e.g.
            ``(512, -1)``, ``"auto"``). Default: :func:`default_chunks`, about 32 MiB of float32
            per chunk, made of whole rows when possible (rows are contiguous in FITS).
        name : str, optional
            Name of the array (its chunk keys are ``(name, i, j)``); must be unique per source and
            chunking. Default ``read-<file stem>-<hdu>-<hash>``.

        Returns
        -------
        dask.array.Array
            Building it reads nothing; plain/fpack files get one task per chunk reading exactly
            its region, gzip files one shared ``gunzip-<stem>-<hash>`` task per file.
        """
        dtype = np.dtype(np.float32)
        if integers:
            if self.integer_dtype is None:
                raise FitsReadError(
                    f"{self.label}: not an integer image (BITPIX {self.bitpix}, "
                    f"BSCALE {self.bscale:g}, BZERO {self.bzero:g})"
                )
            dtype = self.integer_dtype
        norm = default_chunks(self.shape) if chunks is None else normalize_chunks(chunks, self.shape, dtype=np.float32)
        if name is None:
            kind = "read-int" if integers else "read"
            name = f"{kind}-{_stem(self.path)}-{self.hdu}-{_digest(self.token, norm)[:12]}"
        ystarts = np.cumsum((0, *norm[0])).tolist()
        xstarts = np.cumsum((0, *norm[1])).tolist()
        dsk: dict[Any, Any] = {}
        gz_key = None
        if self.kind == "gzip":
            ref = self._file
            gz_key = f"gunzip-{_stem(self.path)}-{ref.__dask_tokenize__()[:12]}"
            dsk[gz_key] = (_gunzip, ref)
        for i in range(len(norm[0])):
            rows = slice(ystarts[i], ystarts[i + 1])
            for j in range(len(norm[1])):
                cols = slice(xstarts[j], xstarts[j + 1])
                if gz_key is None:
                    dsk[(name, i, j)] = (_read_chunk, self, rows, cols, integers)
                else:
                    dsk[(name, i, j)] = (_decode_chunk, gz_key, self, rows, cols, integers)
        return da.Array(dsk, name, chunks=norm, dtype=dtype, meta=np.empty((0, 0), dtype))


def _read_chunk(source: ImageSource, rows: slice, cols: slice, integers: bool = False) -> np.ndarray:
    return source._read(rows, cols, integers=integers)


def _decode_chunk(buffer: bytes, source: ImageSource, rows: slice, cols: slice, integers: bool = False) -> np.ndarray:
    return source._decode(buffer, rows, cols, integers=integers)


def default_chunks(shape: tuple[int, int], target_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[tuple[int, ...], ...]:
    """Chunks of about ``target_bytes`` of float32, whole rows when a row fits, balanced.

    >>> default_chunks((4200, 966), target_bytes=4 << 20)
    ((1050, 1050, 1050, 1050), (966,))
    """
    ny, nx = shape
    row_bytes = 4 * nx
    if row_bytes <= target_bytes:
        nparts = max(1, math.ceil(ny * row_bytes / target_bytes))
        cy, cx = math.ceil(ny / nparts), nx
    else:
        cy, cx = 1, math.ceil(nx / math.ceil(row_bytes / target_bytes))
    return normalize_chunks((cy, cx), shape)


def _scan_checked(path: str | os.PathLike[str]) -> _Scan:
    scan = _scan_all(path)
    if not scan.images:
        scan_file(path)  # raises the "no 2-D image" error with the reasons
    return scan


def image_source(path: str | os.PathLike[str], hdu: HduKey = None) -> ImageSource:
    """Scan ``path``'s headers and return the :class:`ImageSource` of one image HDU.

    Parameters
    ----------
    path : str or os.PathLike
        A FITS file (plain, gzip or fpack).
    hdu : int, str, (str, int) or None
        HDU index, ``EXTNAME``, ``(EXTNAME, EXTVER)``, or None for the file's only image HDU.

    Raises
    ------
    FitsReadError
        Unreadable file, no such image HDU, or several image HDUs and ``hdu=None``.
    """
    scan = _scan_checked(path)
    return ImageSource.from_info(select_hdu(scan.images, hdu, scan.path, scan.skipped))


def open_frame(path: str | os.PathLike[str], hdu: HduKey = None, chunks: Any = None) -> da.Array:
    """Open one image HDU of a FITS file as a lazy float32 dask array ``(ny, nx)``.

    Parameters
    ----------
    path : str or os.PathLike
        A FITS file (plain, gzip or fpack).
    hdu : int, str, (str, int) or None
        HDU index, ``EXTNAME``, ``(EXTNAME, EXTVER)``, or None for the only image HDU.
    chunks : optional
        See :meth:`ImageSource.to_dask`.

    Examples
    --------
    >>> frame = open_frame("raw/bias01.fits.gz")  # doctest: +SKIP
    >>> frame.mean().compute()  # doctest: +SKIP
    """
    return image_source(path, hdu).to_dask(chunks)


def open_stack(paths: Sequence[str | os.PathLike[str]], hdu: HduKey = None, chunks: Any = None) -> da.Array:
    """Open the same image HDU of several files as a lazy float32 stack ``(N, ny, nx)``.

    Parameters
    ----------
    paths : sequence of str or os.PathLike
        The files, in stack order.
    hdu : int, str, (str, int) or None
        Which HDU of each file (see :func:`open_frame`).
    chunks : optional
        Chunks of one frame (see :meth:`ImageSource.to_dask`); the stack is chunked
        ``(1, cy, cx)``.

    Raises
    ------
    ShapeMismatchError
        A frame's shape differs from the first frame's; the message names the file.
    FitsReadError
        A file cannot be read or lacks the HDU.
    """
    paths = list(paths)
    if not paths:
        raise ConfigError("open_stack needs at least one file")
    sources = [image_source(p, hdu) for p in paths]
    expected = sources[0].shape
    for src in sources[1:]:
        if src.shape != expected:
            raise ShapeMismatchError(
                f"{src.label}: frame shape (ny, nx) = {src.shape} differs from the expected "
                f"{expected} of the first frame {sources[0].label}"
            )
    norm = default_chunks(expected) if chunks is None else normalize_chunks(chunks, expected, dtype=np.float32)
    return da.stack([src.to_dask(norm) for src in sources])


def _chip_names(infos: list[HduInfo]) -> list[str]:
    names = []
    for info in infos:
        name = info.header.get("CCDNAME", info.extname)
        name = str(name).strip() if name is not None else ""
        names.append(name or f"HDU{info.index}")
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    out = []
    for name, info in zip(names, infos, strict=True):
        if seen[name] > 1:
            name = f"{name}_{info.extver}" if info.extver is not None else f"{name}_HDU{info.index}"
        out.append(name)
    if len(set(out)) < len(out):  # still clashing (e.g. repeated EXTVER): fall back to indices
        out = [f"{n}_HDU{i.index}" if seen[n0] > 1 else n for n, n0, i in zip(out, names, infos, strict=True)]
    return out


def open_chips(path: str | os.PathLike[str], chunks: Any = None) -> dict[str, da.Array]:
    """Open every 2-D image HDU of a (multi-extension) file as lazy float32 arrays.

    Parameters
    ----------
    path : str or os.PathLike
        A FITS file (plain, gzip or fpack).
    chunks : optional
        See :meth:`ImageSource.to_dask`.

    Returns
    -------
    dict of str to dask.array.Array
        In file order, keyed by chip name: ``CCDNAME``, else ``EXTNAME``, else ``"HDU<i>"``.
        Names shared by several HDUs get ``_<EXTVER>`` (or ``_HDU<i>``) appended. For a
        gzip-wrapped file all chips share one decompression task.
    """
    infos = scan_file(path)
    return {
        name: ImageSource.from_info(info).to_dask(chunks) for name, info in zip(_chip_names(infos), infos, strict=True)
    }
