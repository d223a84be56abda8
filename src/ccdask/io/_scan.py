"""Header-only scanning of FITS files: plain, gzip-wrapped and fpack tile-compressed.

The scanner walks the file block by block itself (2880-byte FITS blocks): it reads each header,
works out from BITPIX/NAXISn/PCOUNT/GCOUNT how many data bytes follow, and seeks past them. For a
plain file it therefore never reads pixel bytes, and it notices a truncated file by comparing the
file size with the sizes the headers declare. A gzip-wrapped file cannot be seeked, so its stream
is decompressed (and discarded) as it is walked, which also proves the stream is complete.

A file that ends inside an HDU (inside a header, or before the data its header declares) raises
:class:`TruncatedFileError`, which names the HDU, its EXTNAME when readable, the byte where the
file (or the decompressed gzip stream) ends and the byte where the HDU should end. Only the
padding after the last HDU's data may be missing (some writers omit it; no pixel is lost). A
file that ends exactly at an HDU boundary is a complete FITS file with fewer HDUs: nothing in
it says more should follow, so it scans cleanly (the night's plan notes the missing chips).
"""

from __future__ import annotations

import copy
import gzip
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

from astropy.io import fits

from ..errors import FitsReadError, TruncatedFileError, where

__all__ = ["HduInfo", "TruncatedFileError", "scan_file", "select_hdu"]

BLOCK = 2880
CARD = 80
GZIP_MAGIC = b"\x1f\x8b"
VALID_BITPIX = (8, 16, 32, 64, -32, -64)
_SKIP_CHUNK = 4 << 20
_GZIP_INPUT = 1 << 16

Kind = Literal["plain", "gzip", "fpack"]
HduKey = int | str | tuple[str, int] | None

# Cards describing how an HDU is stored rather than what the image is.
_STORAGE_CARDS = frozenset({"SIMPLE", "XTENSION", "EXTEND", "PCOUNT", "GCOUNT", "GROUPS", "CHECKSUM", "DATASUM", "END"})
# Cards of the primary header that describe the primary's own data array (not an extension's).
_PRIMARY_DATA_CARDS = frozenset({"BITPIX", "NAXIS", "BZERO", "BSCALE", "BLANK", "EXTNAME", "EXTVER", "EXTLEVEL"})
_NAXIS_N = re.compile(r"^NAXIS\d+$")
# Binary-table column cards and tile-compression cards of a CompImageHDU (FITS tiled image
# compression convention). Ordinary keywords that merely start with Z (ZD, ZENITH...) are kept.
_TABLE_CARD = re.compile(r"^(T(TYPE|FORM|UNIT|NULL|SCAL|ZERO|DIM|DISP|BCOL)\d+|TFIELDS|THEAP)$")
_COMPRESSION_CARD = re.compile(
    r"^Z(IMAGE|CMPTYPE|BITPIX|NAXIS\d*|TILE\d+|NAME\d+|VAL\d+|MASKCMP|QUANTIZ|DITHER0|BLOCKED"
    r"|HECKSUM|DATASUM|TENSION|SIMPLE|EXTEND|PCOUNT|GCOUNT|BLANK)$"
)


@dataclass(frozen=True)
class HduInfo:
    """What the header of one 2-D image HDU says, without its pixels.

    Attributes
    ----------
    path : str
        Absolute path of the file.
    index : int
        Index of the HDU in the file (0 is the primary HDU).
    extname, extver : str or None, int or None
        ``EXTNAME`` (stripped) and ``EXTVER`` of the HDU, when present.
    header : astropy.io.fits.Header
        The merged logical header: the primary header's cards, then this HDU's cards overriding
        them (the extension wins). Storage cards (``SIMPLE``, ``XTENSION``, ``PCOUNT``,
        ``GCOUNT``, ``EXTEND``, checksums) and tile-compression cards (``ZIMAGE``, ``ZBITPIX``,
        ``TFORM1``...) are dropped; ``BITPIX``/``NAXIS``/``NAXISn`` describe the image itself.
    shape : tuple of int
        Numpy shape ``(ny, nx)`` = ``(NAXIS2, NAXIS1)``.
    bitpix : int
        Logical ``BITPIX`` (16 for uint16 stored as int16 with ``BZERO=32768``; ``ZBITPIX`` for
        a compressed image).
    bzero, bscale : float
        ``BZERO`` (default 0) and ``BSCALE`` (default 1).
    blank : int or None
        ``BLANK`` for integer images, else None.
    kind : {"plain", "gzip", "fpack"}
        How the pixels are stored: a plain FITS file, a gzip-wrapped FITS file (any HDU of it),
        or a tile-compressed ``CompImageHDU`` in an otherwise plain file.
    data_offset : int or None
        Byte offset of the first pixel in the FITS byte stream: in the file itself for ``plain``,
        in the decompressed stream for ``gzip`` (where the file cannot be memory-mapped), and
        None for ``fpack`` (pixels live in compressed tiles).
    size, mtime_ns : int
        Size in bytes and modification time of the file when it was scanned (cache identity).
    """

    path: str
    index: int
    extname: str | None
    extver: int | None
    header: fits.Header
    shape: tuple[int, int]
    bitpix: int
    bzero: float
    bscale: float
    blank: int | None
    kind: Kind
    data_offset: int | None
    size: int
    mtime_ns: int

    @property
    def label(self) -> str:
        """``'path[index]'``, the way error messages name this HDU."""
        return f"{self.path}[{self.index}]"


@dataclass
class _Record:
    """One HDU as found by the block walker (any type, before filtering)."""

    index: int
    header: fits.Header
    data_offset: int
    data_size: int


@dataclass
class _Scan:
    """Result of walking a whole file: every HDU, and the 2-D image HDUs among them."""

    path: str
    records: list[_Record]
    images: list[HduInfo]
    skipped: dict[int, tuple[str | None, int | None, str]]  # index -> (EXTNAME, EXTVER, why)


# --------------------------------------------------------------------------- byte sources


class _PlainBytes:
    """Sequential reads with cheap forward skips (seek) over a seekable file."""

    stream = "the file"
    truncated = False

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self._fh = fh
        self._size = size
        self.pos = 0

    def read(self, n: int) -> bytes:
        data = self._fh.read(n)
        self.pos += len(data)
        return data

    def skip(self, n: int) -> int:
        """Move ``n`` bytes forward without reading; return how many bytes were available."""
        available = max(0, min(n, self._size - self.pos))
        self.pos += available
        self._fh.seek(self.pos)
        return available


class _GzipBytes:
    """Sequential reads over a gzip stream; skipping decompresses and discards.

    zlib is driven directly (not :class:`gzip.GzipFile`) so that a stream cut short reads like a
    short plain file: reads return the bytes that exist, ``pos`` is then exactly where the
    decompressed stream ends, and ``truncated`` says the end-of-stream marker never came. Each
    member's CRC and length are checked by zlib; several members and zero padding between them
    are accepted, as :mod:`gzip` accepts them.
    """

    stream = "the decompressed gzip stream"

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self._z = zlib.decompressobj(wbits=31)
        self._started = False  # the current member has received input
        self._ended = False  # the compressed input is exhausted
        self._pending = b""  # compressed bytes left after a member's end, not yet fed
        self._buf = b""
        self._off = 0
        self.truncated = False
        self.pos = 0

    def _next(self) -> bytes:
        """The next piece of decompressed output; b"" at the end of the stream."""
        while True:
            z = self._z
            if z.eof:  # a member ended: what follows it may start another one
                self._pending = z.unused_data
                self._z = z = zlib.decompressobj(wbits=31)
                self._started = False
            data = self._pending or z.unconsumed_tail
            self._pending = b""
            if not data:
                data = b"" if self._ended else self._fh.read(_GZIP_INPUT)
                if not data:
                    self._ended = True
                    self.truncated = self._started  # a member began and never reached its end
                    return b""
            if not self._started:
                data = data.lstrip(b"\0")  # zero padding between (or after) members
                if not data:
                    continue
                self._started = True
            out = z.decompress(data, _SKIP_CHUNK)
            if out:
                return out

    def read(self, n: int) -> bytes:
        parts = [self._buf[self._off : self._off + n]]
        have = len(parts[0])
        self._off += have
        while have < n:
            more = self._next()
            if not more:
                break
            take = min(len(more), n - have)
            parts.append(more[:take])
            have += take
            self._buf, self._off = more, take
        data = b"".join(parts)
        self.pos += len(data)
        return data

    def skip(self, n: int) -> int:
        done = min(n, len(self._buf) - self._off)
        self._off += done
        while done < n:
            more = self._next()
            if not more:
                break
            take = min(len(more), n - done)
            self._buf, self._off = more, take
            done += take
        self.pos += done
        return done


# --------------------------------------------------------------------------- walking


def _int_card(header: fits.Header, key: str, default: int | None, label: str) -> int:
    value = header.get(key, default)
    if value is None:
        raise FitsReadError(f"{label}: the required header keyword {key} is missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise FitsReadError(f"{label}: header keyword {key} = {value!r} is not an integer")
    return value


def _data_size(header: fits.Header, label: str, prefix: str = "") -> tuple[int, list[int]]:
    """Bytes of data the header declares, and its NAXISn list (``prefix='Z'`` for ZNAXISn)."""
    bitpix = _int_card(header, prefix + "BITPIX", None, label)
    if bitpix not in VALID_BITPIX:
        raise FitsReadError(
            f"{label}: invalid {prefix}BITPIX = {bitpix} (FITS allows {', '.join(map(str, VALID_BITPIX))})"
        )
    naxis = _int_card(header, prefix + "NAXIS", None, label)
    if not 0 <= naxis <= 999:
        raise FitsReadError(f"{label}: invalid {prefix}NAXIS = {naxis}")
    axes = [_int_card(header, f"{prefix}NAXIS{i}", None, label) for i in range(1, naxis + 1)]
    if any(n < 0 for n in axes):
        raise FitsReadError(f"{label}: negative axis length in {prefix}NAXISn = {axes}")
    if prefix or naxis == 0:
        return 0, axes
    groups = bool(header.get("GROUPS", False)) and axes[0] == 0
    pcount = _int_card(header, "PCOUNT", 0, label)
    gcount = _int_card(header, "GCOUNT", 1, label)
    count = 1
    for n in axes[1:] if groups else axes:
        count *= n
    if count == 0 and not groups and pcount == 0:
        return 0, axes
    return abs(bitpix) // 8 * gcount * (pcount + count), axes


def _padded(n: int) -> int:
    """``n`` rounded up to a whole number of FITS blocks."""
    return n + (-n % BLOCK)


def _named(extname: str | None) -> str:
    return f" (EXTNAME = {extname!r})" if extname else ""


def _name_value(value: object) -> str | None:
    """An EXTNAME card's value as a name, or None (absent, blank or not a string)."""
    return (value.strip() or None) if isinstance(value, str) else None


def _extname_in(raw: bytes) -> str | None:
    """The EXTNAME of a header's bytes, complete or not (None when absent or unreadable)."""
    for i in range(0, len(raw) - CARD + 1, CARD):
        if raw[i : i + 8] == b"EXTNAME ":
            try:
                value = fits.Card.fromstring(raw[i : i + CARD].decode("ascii", errors="replace")).value
            except Exception:  # a damaged card: the name is simply not known
                return None
            return _name_value(value)
    return None


def _declared(header: fits.Header) -> str:
    """What the header says the data are, in its own keywords, for truncation messages."""
    naxis = header.get("NAXIS", 0)
    axes = [header.get(f"NAXIS{i}") for i in range(1, naxis + 1)]
    if _is_compressed(header):
        return (
            f"a tile-compressed image: a table of NAXIS1 x NAXIS2 = {axes[0]} x {axes[1]} "
            f"bytes and a heap of PCOUNT = {header.get('PCOUNT', 0)} bytes"
        )
    text = f"BITPIX = {header.get('BITPIX')}, NAXISn = {' x '.join(map(str, axes))}"
    pcount, gcount = header.get("PCOUNT", 0), header.get("GCOUNT", 1)
    if pcount or gcount != 1:
        text += f", PCOUNT = {pcount}, GCOUNT = {gcount}"
    return text


def _header_cut(src: _PlainBytes | _GzipBytes, path: str, index: int, start: int, raw: bytes) -> TruncatedFileError:
    """The error for a stream that ends inside the header of HDU ``index`` (``raw`` so far)."""
    extname = _extname_in(raw)
    ends = src.pos
    least = start + ((ends - start) // BLOCK + 1) * BLOCK
    return TruncatedFileError(
        f"{path}[{index}]: truncated file: {src.stream} ends at byte {ends}, inside the header "
        f"of HDU {index}{_named(extname)}, which starts at byte {start} and has no END card yet, "
        f"so the HDU should end at byte {least} or later",
        path=path,
        hdu=index,
        extname=extname,
        ends_at=ends,
        should_end=least,
    )


def _read_header(src: _PlainBytes | _GzipBytes, first: bytes, path: str, index: int, start: int) -> fits.Header:
    """Read header blocks (``first`` already read, from byte ``start``) up to the END card."""
    blocks = [first]
    block = first
    while True:
        if len(block) < BLOCK:
            raise _header_cut(src, path, index, start, b"".join(blocks))
        end = next((i for i in range(0, BLOCK, CARD) if block[i : i + 8] == b"END     "), None)
        if end is not None:
            break
        block = src.read(BLOCK)
        blocks.append(block)
    text = b"".join(blocks)[: (len(blocks) - 1) * BLOCK + end + CARD]
    try:
        return fits.Header.fromstring(text.decode("ascii", errors="replace"))
    except Exception as exc:  # astropy raises assorted errors on malformed cards
        raise FitsReadError(f"{path}[{index}]: cannot parse the header: {exc}") from exc


_SIMPLE = b"SIMPLE  =                    T"
_XTENSION = b"XTENSION="


def _walk(src: _PlainBytes | _GzipBytes, path: str) -> Iterator[_Record]:
    """Yield every HDU of a FITS byte stream, checking that each one is all there.

    Each HDU should end where its header's data size, padded to whole blocks, says; the stream
    ending before that raises :class:`TruncatedFileError`. The padding of the last HDU alone
    may be missing. The walk stops at the end of the stream or at a block that does not start
    an extension (trailing padding or junk), unless that block is the start of an XTENSION
    card cut short.
    """
    index = 0
    last: _Record | None = None
    while True:
        label = f"{path}[{index}]"
        start = src.pos
        first = src.read(BLOCK)
        if index == 0:
            if not first:
                raise FitsReadError(f"{path}: the file is empty")
            if len(first) < len(_SIMPLE) and _SIMPLE.startswith(first):
                raise _header_cut(src, path, 0, start, first)
            if not first.startswith(b"SIMPLE  =") or first[29:30] != b"T":
                raise FitsReadError(
                    f"{path}: not a FITS file (it does not start with 'SIMPLE  =                    T')"
                )
        elif not first.startswith(_XTENSION):
            if first and len(first) < len(_XTENSION) and _XTENSION.startswith(first):
                raise _header_cut(src, path, index, start, first)
            break  # end of file, or trailing padding/junk after the last HDU
        header = _read_header(src, first, path, index, start)
        size, _ = _data_size(header, label)
        offset = src.pos
        got = src.skip(size)
        if got < size:
            extname = _name_value(header.get("EXTNAME"))
            raise TruncatedFileError(
                f"{label}: truncated file: {src.stream} ends at byte {src.pos}, inside the data "
                f"of HDU {index}{_named(extname)}: its header declares {size} data bytes "
                f"({_declared(header)}) from byte {offset}, so the HDU should end at byte "
                f"{_padded(offset + size)}",
                path=path,
                hdu=index,
                extname=extname,
                ends_at=src.pos,
                should_end=_padded(offset + size),
            )
        last = _Record(index, header, offset, size)
        yield last
        src.skip(-size % BLOCK)  # padding to a whole block; may be missing at the very end
        index += 1
    if isinstance(src, _GzipBytes):
        while src.skip(_SKIP_CHUNK):  # what follows the last HDU: the stream must end cleanly
            pass
        if src.truncated and last is not None:
            end = _padded(last.data_offset + last.data_size)
            extname = _name_value(last.header.get("EXTNAME"))
            where_cut = (
                f"inside the padding after the data of HDU {last.index}{_named(extname)}, "
                f"which should end at byte {end}"
                if src.pos < end
                else f"after its last HDU ({last.index}), which ends at byte {end}"
            )
            raise TruncatedFileError(
                f"{path}[{last.index}]: truncated file: {src.stream} ends at byte {src.pos} "
                f"without its end-of-stream marker, {where_cut}",
                path=path,
                hdu=last.index,
                extname=extname,
                ends_at=src.pos,
                should_end=end,
            )


# --------------------------------------------------------------------------- headers


def _logical_header(record: _Record) -> fits.Header:
    """The image header a compressed HDU stands for (ZBITPIX -> BITPIX...), or a copy."""
    header = record.header
    if not _is_compressed(header):
        return header.copy()
    cards = []
    for card in header.cards:
        key = card.keyword
        if key in ("BITPIX", "NAXIS") or _NAXIS_N.match(key) or _TABLE_CARD.match(key):
            continue
        if key == "ZBITPIX":
            cards.append(fits.Card("BITPIX", card.value, card.comment))
        elif key == "ZNAXIS" or (key.startswith("ZNAXIS") and key[6:].isdigit()):
            cards.append(fits.Card(key[1:], card.value, card.comment))
        elif not _COMPRESSION_CARD.match(key):
            cards.append(card)
    return fits.Header(cards)


def _is_compressed(header: fits.Header) -> bool:
    return str(header.get("XTENSION", "")).strip() == "BINTABLE" and header.get("ZIMAGE", False) is True


def _merge(primary: fits.Header | None, image: fits.Header) -> fits.Header:
    """Primary cards, then the image's cards (which win); storage cards dropped."""

    def keep(key: str) -> bool:
        return key not in _STORAGE_CARDS and not _COMPRESSION_CARD.match(key)

    axes, rest = [], []
    for card in image.cards:
        key = card.keyword
        if key in ("BITPIX", "NAXIS") or _NAXIS_N.match(key):
            axes.append(card)
        elif keep(key):
            rest.append(card)
    inherited = []
    if primary is not None:
        overridden = {c.keyword for c in rest if c.keyword not in ("COMMENT", "HISTORY", "")}
        for card in primary.cards:
            key = card.keyword
            if keep(key) and key not in _PRIMARY_DATA_CARDS and not _NAXIS_N.match(key) and key not in overridden:
                inherited.append(card)
    # Fresh cards: the merged headers of several extensions must not share Card objects.
    return fits.Header([copy.copy(card) for card in axes + inherited + rest])


def _number(header: fits.Header, key: str, default: float, label: str) -> float:
    value = header.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FitsReadError(f"{label}: header keyword {key} = {value!r} is not a number")
    return float(value)


# --------------------------------------------------------------------------- scanning


def _open_stream(path: str) -> tuple[BinaryIO, os.stat_result, bool]:
    """Open ``path`` read-only; return the handle, its stat and whether it is gzip-wrapped."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise FitsReadError(f"{path}: cannot open the file: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fh.fileno())
        is_gzip = fh.read(2) == GZIP_MAGIC
        fh.seek(0)
    except OSError as exc:
        fh.close()
        raise FitsReadError(f"{path}: cannot read the file: {exc.strerror or exc}") from exc
    return fh, st, is_gzip


def _scan_all(path: str | os.PathLike[str]) -> _Scan:
    """Walk a whole file and classify each of its HDUs."""
    path = os.path.abspath(os.fspath(path))
    fh, st, is_gzip = _open_stream(path)
    with fh:
        src = _GzipBytes(fh) if is_gzip else _PlainBytes(fh, st.st_size)
        try:
            records = list(_walk(src, path))
        except FitsReadError:
            raise
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise FitsReadError(f"{path}: corrupt or truncated gzip stream: {exc}") from exc
        except OSError as exc:
            raise FitsReadError(f"{path}: cannot read the file: {exc.strerror or exc}") from exc

    images: list[HduInfo] = []
    skipped: dict[int, tuple[str | None, int | None, str]] = {}
    primary = records[0].header
    for rec in records:
        label = f"{path}[{rec.index}]"
        hdr = rec.header
        extname = hdr.get("EXTNAME")
        extname = str(extname).strip() if extname is not None else None
        extver = hdr.get("EXTVER")
        extver = extver if isinstance(extver, int) and not isinstance(extver, bool) else None
        compressed = False
        why = None
        if rec.index > 0:
            xtension = str(hdr.get("XTENSION", "")).strip()
            compressed = _is_compressed(hdr)
            if xtension != "IMAGE" and not compressed:
                why = f"it is a {xtension or 'non-image'} extension, not an image"
        elif hdr.get("GROUPS", False) is True:
            why = "it holds random groups, not an image"
        if why is None:
            _, axes = _data_size(hdr, label, "Z" if compressed else "")
            if not axes or 0 in axes:
                why = f"it holds no image data (NAXIS = {len(axes)}, axes {axes})"
            elif len(axes) != 2:
                why = f"its image has NAXIS = {len(axes)} (axes {axes}); ccdask reads 2-D images only"
        if why is not None:
            skipped[rec.index] = (extname, extver, why)
            continue
        logical = _logical_header(rec)
        header = _merge(primary if rec.index > 0 else None, logical)
        bitpix = _int_card(logical, "BITPIX", None, label)
        blank = logical.get("BLANK") if bitpix > 0 else None
        if isinstance(blank, bool) or not isinstance(blank, int):
            blank = None
        images.append(
            HduInfo(
                path=path,
                index=rec.index,
                extname=extname,
                extver=extver,
                header=header,
                shape=(axes[1], axes[0]),
                bitpix=bitpix,
                bzero=_number(logical, "BZERO", 0.0, label),
                bscale=_number(logical, "BSCALE", 1.0, label),
                blank=blank,
                kind="gzip" if is_gzip else ("fpack" if compressed else "plain"),
                data_offset=None if compressed else rec.data_offset,
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
            )
        )
    return _Scan(path, records, images, skipped)


def _no_image_message(scan: _Scan) -> str:
    reasons = "; ".join(f"HDU {i}: {why}" for i, (_, _, why) in sorted(scan.skipped.items()))
    return f"{scan.path}: no 2-D image HDU in the file ({len(scan.records)} HDU(s)" + (
        f"; {reasons})" if reasons else ")"
    )


def scan_file(path: str | os.PathLike[str]) -> list[HduInfo]:
    """Scan the headers of a FITS file and describe each 2-D image HDU in it.

    Empty HDUs (such as the primary of a multi-extension file), tables and images that are not
    2-D are skipped. Pixel data of plain and fpack files are never read; a gzip-wrapped file is
    decompressed as a stream (and discarded) to reach every header and prove it is complete.

    Parameters
    ----------
    path : str or os.PathLike
        A plain (``.fits``/``.fit``/``.fts``), gzip-wrapped (recognised by its magic bytes) or
        fpack tile-compressed FITS file. It is opened read-only.

    Returns
    -------
    list of HduInfo
        One entry per 2-D image HDU, in file order.

    Raises
    ------
    TruncatedFileError
        The file (or its decompressed gzip stream) ends inside an HDU: inside a header, or
        before the data its header declares. The message and the error's fields name the HDU,
        its EXTNAME when readable, where the file ends and where the HDU should end.
    FitsReadError
        The file is missing or unreadable, empty, not FITS, a corrupt gzip stream, or holds no
        2-D image (the message says what each HDU holds instead, e.g. ``NAXIS = 3``).

    Examples
    --------
    >>> infos = scan_file("raw/obj001.fits")  # doctest: +SKIP
    >>> [(i.index, i.extname, i.shape) for i in infos]  # doctest: +SKIP
    [(1, 'CCD1', (4096, 2048)), (2, 'CCD2', (4096, 2048))]
    """
    scan = _scan_all(path)
    if not scan.images:
        raise FitsReadError(_no_image_message(scan))
    return scan.images


def _hdu_name(key: HduKey) -> str:
    if isinstance(key, tuple):
        return f"({key[0]!r}, {key[1]!r})"
    return repr(key)


def select_hdu(
    infos: list[HduInfo], hdu: HduKey, path: str, skipped: dict[int, tuple[str | None, int | None, str]] | None = None
) -> HduInfo:
    """Pick one image HDU out of ``scan_file``'s answer.

    Parameters
    ----------
    infos : list of HduInfo
        The 2-D image HDUs of the file.
    hdu : int, str, (str, int) or None
        An HDU index, an ``EXTNAME`` (case-insensitive), an ``(EXTNAME, EXTVER)`` pair, or None
        for "the only image HDU".
    path : str
        The file, for error messages.
    skipped : dict, optional
        HDUs absent from ``infos``, as ``{index: (EXTNAME, EXTVER, why it was skipped)}``, for
        better error messages.

    Raises
    ------
    FitsReadError
        No such image HDU, or ``hdu=None`` and the file holds several image HDUs.
    """
    skipped = skipped or {}
    if hdu is None:
        if len(infos) == 1:
            return infos[0]
        names = ", ".join(f"{i.index} ({i.extname})" if i.extname else str(i.index) for i in infos)
        raise FitsReadError(
            f"{path}: the file holds {len(infos)} image HDUs ({names}); "
            "choose one with hdu= (an index, an EXTNAME or (EXTNAME, EXTVER))"
        )
    if isinstance(hdu, bool):
        raise FitsReadError(f"{path}: hdu={hdu!r} is not an HDU index or name")
    if isinstance(hdu, int):
        for info in infos:
            if info.index == hdu:
                return info
        if hdu in skipped:
            raise FitsReadError(f"{where(path, hdu)}{skipped[hdu][2]}")
        raise FitsReadError(f"{where(path, hdu)}no such HDU; the image HDUs are {[i.index for i in infos]}")
    if isinstance(hdu, str):
        name, ver = hdu, None
    elif isinstance(hdu, tuple) and len(hdu) == 2 and isinstance(hdu[0], str) and isinstance(hdu[1], int):
        name, ver = hdu
    else:
        raise FitsReadError(f"{path}: hdu={hdu!r} is not an index, an EXTNAME or an (EXTNAME, EXTVER) pair")
    want = name.strip().upper()

    def matches(extname: str | None, extver: int | None) -> bool:
        return (
            extname is not None
            and extname.upper() == want
            and (ver is None or (extver if extver is not None else 1) == ver)
        )

    found = [i for i in infos if matches(i.extname, i.extver)]
    if len(found) == 1:
        return found[0]
    if not found:
        for index, (extname, extver, why) in sorted(skipped.items()):
            if matches(extname, extver):
                raise FitsReadError(f"{path}[{index}] (hdu={_hdu_name(hdu)}): {why}")
        names = sorted({i.extname for i in infos if i.extname})
        raise FitsReadError(f"{path}[{_hdu_name(hdu)}]: no image HDU with that name; EXTNAMEs present: {names}")
    raise FitsReadError(
        f"{path}[{_hdu_name(hdu)}]: {len(found)} image HDUs share that name "
        f"(HDUs {[i.index for i in found]}); pass (EXTNAME, EXTVER) or an index"
    )
