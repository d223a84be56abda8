"""The frame table: one row per (file, chip), built from headers only.

>>> cat = Catalog.scan(["raw/"])                         # doctest: +SKIP
>>> cat.select(imagetyp="flat", filter="g").paths        # doctest: +SKIP

Files are scanned in parallel threads; nothing reads pixel data (except to confirm that two
files with identical headers are copies of one exposure). Files that cannot be read as FITS
images (also dangling links and FIFOs named like FITS files) and the second copy of a duplicated
file are *problems*: they are listed (``.problems``) with the reason, skipped, and reported
with a :class:`~ccdask.errors.CcdaskWarning` (``strict=True`` raises instead), whose
``problems`` attribute holds them all. A file that ends inside an HDU (a cut header, or fewer
data bytes than its header declares) is one problem naming that HDU and the byte offsets, and
none of its HDUs is catalogued: a partial exposure is never reduced as a shorter one.
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from astropy.io import fits

from .errors import CcdaskError, CcdaskWarning, FitsReadError, TruncatedFileError
from .io import HduInfo, scan_file
from .profiles import Profile, load_profile
from .profiles._layout import ChipLayout
from .profiles._profile import detect_profile

if TYPE_CHECKING:  # the readers (dask.array) and astropy.table are imported where they are used
    from astropy.table import Table

    from .io import ImageSource

__all__ = ["FITS_SUFFIXES", "Catalog", "Entry", "Problem"]

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fz", ".fits.fz")


@dataclass(frozen=True)
class Problem:
    """A file (or one extension of it) that was skipped, and why."""

    path: str
    hdu: int | None
    reason: str

    def __str__(self) -> str:
        loc = self.path if self.hdu is None else f"{self.path}[{self.hdu}]"
        return f"{loc}: {self.reason}"


@dataclass(frozen=True)
class Entry:
    """One chip of one raw file, as the catalogue sees it."""

    path: str
    hdu: int
    extname: str | None
    chip: str
    imagetyp: str
    label: str
    exptime: float | None
    filter: str | None
    date: str | None
    object: str | None
    shape: tuple[int, int]
    dtype: str
    kind: str
    profile: str
    layout: ChipLayout
    size: int
    mtime_ns: int
    header: fits.Header = field(repr=False, compare=False)
    info: HduInfo | None = field(default=None, repr=False, compare=False)

    @property
    def source(self) -> ImageSource:
        """The pixel reader of this chip (no I/O: built from the scanned header)."""
        from .io import ImageSource, image_source

        if self.info is None:
            return image_source(self.path, self.hdu)
        return ImageSource.from_info(self.info)

    @property
    def name(self) -> str:
        """The file name without FITS suffixes, e.g. ``flat_g_001``."""
        return strip_fits_suffix(Path(self.path).name)

    @property
    def identity(self) -> dict[str, Any]:
        """What identifies this input for caching: path, size, mtime and header text."""
        return {
            "path": self.path,
            "hdu": self.hdu,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "header": self.header.tostring(),
        }


def strip_fits_suffix(name: str) -> str:
    for suffix in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _dtype_name(info: HduInfo) -> str:
    if info.bscale != 1:
        return "float32"
    if info.bitpix == 8:
        return "uint8"
    if info.bitpix == 16:
        return "uint16" if info.bzero == 32768 else "int16"
    if info.bitpix == 32:
        return "uint32" if info.bzero == 2**31 else "int32"
    if info.bitpix == 64:
        return "int64"
    return {-32: "float32", -64: "float64"}.get(info.bitpix, f"bitpix{info.bitpix}")


class Catalog:
    """A table of raw frames, one row per (file, chip), with the problems found while scanning."""

    def __init__(self, entries: Sequence[Entry], problems: Sequence[Problem] = ()):
        self.entries: tuple[Entry, ...] = tuple(entries)
        self.problems: tuple[Problem, ...] = tuple(problems)

    # -- building ---------------------------------------------------------------------
    @classmethod
    def scan(
        cls,
        paths: str | os.PathLike | Iterable[str | os.PathLike],
        *,
        profile: str | Path | Profile | None = None,
        strict: bool = False,
        threads: int = 8,
    ) -> Catalog:
        """Scan files and folders (recursively, FITS suffixes only) for image HDUs.

        Parameters
        ----------
        paths : path or iterable of paths
            Files are scanned whatever their name; folders contribute their FITS files.
        profile : str, Path or Profile, optional
            The instrument profile for every file; by default each file's profile is detected
            from its header (falling back to ``generic``).
        strict : bool
            Raise the first problem as an error instead of skipping the file.
        threads : int
            Header-reading threads.
        """
        files = _expand(paths)
        prof = None if profile is None else load_profile(profile)
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            results = list(pool.map(lambda p: _scan_one(p, prof), files))
        _drop_duplicates(results)
        entries, problems = [], []
        for rows, probs in results:
            entries.extend(rows)
            problems.extend(probs)
        if problems:
            if strict:
                raise FitsReadError(f"{len(problems)} problem(s) while cataloguing; first: {problems[0]}")
            warning = CcdaskWarning(
                f"skipped {len(problems)} unusable input(s): "
                + "; ".join(map(str, problems[:5]))
                + (" ..." if len(problems) > 5 else "")
            )
            warning.problems = tuple(problems)  # every one, for a caller that lists them (the CLI)
            warnings.warn(warning, stacklevel=2)
        return cls(entries, problems)

    # -- views ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    @property
    def paths(self) -> list[str]:
        """Distinct file paths, in catalogue order."""
        return list(dict.fromkeys(e.path for e in self.entries))

    @property
    def chips(self) -> list[str]:
        return list(dict.fromkeys(e.chip for e in self.entries))

    @property
    def table(self) -> Table:
        """The frame table as an astropy Table (one row per file and chip)."""
        from astropy.table import Table

        cols = [
            "path",
            "hdu",
            "chip",
            "imagetyp",
            "label",
            "exptime",
            "filter",
            "date",
            "object",
            "ny",
            "nx",
            "dtype",
            "namps",
            "kind",
            "profile",
        ]
        rows = [
            (
                e.path,
                e.hdu,
                e.chip,
                e.imagetyp,
                e.label,
                float("nan") if e.exptime is None else e.exptime,
                e.filter or "",
                e.date or "",
                e.object or "",
                e.shape[0],
                e.shape[1],
                e.dtype,
                e.layout.namps,
                e.kind,
                e.profile,
            )
            for e in self.entries
        ]
        if not rows:
            return Table(
                names=cols, dtype=[str, int, str, str, str, float, str, str, str, int, int, str, int, str, str]
            )
        return Table(rows=rows, names=cols)

    def select(self, **criteria: Any) -> Catalog:
        """Rows whose attributes equal the given values (a value may also be a set or a callable).

        >>> cat.select(imagetyp="flat", filter={"g", "r"}, chip="CCD1")   # doctest: +SKIP
        """

        def keep(e: Entry) -> bool:
            for key, want in criteria.items():
                have = getattr(e, key)
                if callable(want):
                    ok = want(have)
                elif isinstance(want, (set, frozenset, list, tuple)):
                    ok = have in want
                else:
                    ok = have == want
                if not ok:
                    return False
            return True

        return Catalog([e for e in self.entries if keep(e)], self.problems)

    def group_by(self, *keys: str) -> dict[tuple, Catalog]:
        """Split into catalogues sharing the values of ``keys`` (insertion-ordered)."""
        groups: dict[tuple, list[Entry]] = {}
        for e in self.entries:
            groups.setdefault(tuple(getattr(e, k) for k in keys), []).append(e)
        return {k: Catalog(v, self.problems) for k, v in groups.items()}

    # -- reporting --------------------------------------------------------------------
    def summary(self, *, long: bool = False) -> str:
        """A readable summary: counts per type, filter and exposure time, then the problems."""
        nfiles = len(self.paths)
        lines = [
            f"{nfiles} file(s), {len(self.entries)} chip image(s), {len(self.chips)} chip(s): {', '.join(self.chips)}"
        ]
        per_file = {}
        for e in self.entries:
            per_file.setdefault(e.path, e)
        counts = Counter((e.imagetyp, e.label, e.filter or "-", e.exptime) for e in per_file.values())
        lines.append(f"{'type':<9} {'label':<12} {'filter':<10} {'exptime':>9} {'files':>6}")
        for (typ, label, filt, exp), n in sorted(counts.items(), key=lambda kv: _order(kv[0])):
            exps = "-" if exp is None else f"{exp:g}"
            lines.append(f"{typ:<9} {label:<12} {filt:<10} {exps:>9} {n:>6}")
        by_type = Counter(e.imagetyp for e in per_file.values())
        lines.append("totals: " + ", ".join(f"{n} {t}" for t, n in sorted(by_type.items())))
        if long:
            lines.append("")
            lines.append(
                f"{'file':<28} {'hdu':>3} {'chip':<10} {'type':<8} {'label':<10} "
                f"{'exptime':>8} {'filter':<8} {'shape':<11} {'dtype':<7} layout"
            )
            for e in self.entries:
                exps = "-" if e.exptime is None else f"{e.exptime:g}"
                lines.append(
                    f"{Path(e.path).name:<28} {e.hdu:>3} {e.chip:<10} {e.imagetyp:<8} {e.label:<10} "
                    f"{exps:>8} {e.filter or '-':<8} {e.shape[0]}x{e.shape[1]:<6} {e.dtype:<7} "
                    f"{e.layout.describe()}"
                )
        lines.append(f"problems: {len(self.problems)}")
        lines.extend(f"  {p}" for p in self.problems)
        return "\n".join(lines)


_TYPE_ORDER = {"bias": 0, "dark": 1, "flat": 2, "science": 3, "other": 4}


def _order(key: tuple) -> tuple:
    typ, label, filt, exp = key
    return (_TYPE_ORDER.get(typ, 9), label, filt, -1.0 if exp is None else exp)


def _expand(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[str] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            # Entries that are not regular files (a dangling link, a FIFO) are kept so that
            # the scan reports them as problems instead of silently passing them over.
            out.extend(
                str(f.resolve()) if f.is_file() else str(f.absolute())
                for f in sorted(p.rglob("*"))
                if f.name.lower().endswith(FITS_SUFFIXES) and not f.is_dir()
            )
        else:
            out.append(str(p.resolve()) if p.exists() else str(p))
    return list(dict.fromkeys(out))


def _scan_one(path: str, profile: Profile | None) -> tuple[list[Entry], list[Problem]]:
    try:
        st = os.stat(path)
    except OSError as exc:
        link = " (a dangling symbolic link)" if os.path.islink(path) else ""
        return [], [Problem(path, None, f"cannot open the file{link}: {exc.strerror or exc}")]
    if not stat.S_ISREG(st.st_mode):  # opening a FIFO would block; a device is never a frame
        return [], [Problem(path, None, "not a regular file (a FIFO, socket or device)")]
    try:
        infos = scan_file(path)
    except TruncatedFileError as exc:
        # The whole file goes, not just the HDU it ends in: the HDUs before the cut read well,
        # but a partial exposure must never pass for a complete one with fewer chips.
        return [], [
            Problem(path, exc.hdu, _reason(exc, path) + "; the whole file is skipped, none of its HDUs is used")
        ]
    except CcdaskError as exc:
        return [], [Problem(path, None, _reason(exc, path))]
    entries, problems = [], []
    for info in infos:
        prof = profile or detect_profile(info.header)
        try:
            entries.append(_entry(info, prof, multi=len(infos) > 1))
        except CcdaskError as exc:
            problems.append(Problem(path, info.index, _reason(exc, path)))
    return entries, problems


def _drop_duplicates(results: list[tuple[list[Entry], list[Problem]]]) -> None:
    """Turn the second and later copies of one file (same headers, size and bytes) into problems.

    The same exposure under two names (a copy, a hard link) would otherwise be stacked twice
    into a master or reduced twice. Headers and sizes are compared first, so the bytes are
    read only for files whose headers are identical; the first copy in path order is kept.
    """
    groups: dict[tuple, list[int]] = {}
    for i, (rows, _) in enumerate(results):
        if rows:
            groups.setdefault((rows[0].size, tuple(e.header.tostring() for e in rows)), []).append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        kept: dict[str, str] = {}
        for i in sorted(members, key=lambda i: results[i][0][0].path):
            rows, probs = results[i]
            path = rows[0].path
            try:
                digest = _file_digest(path)
            except OSError:
                continue
            if digest in kept:
                results[i] = (
                    [],
                    [
                        *probs,
                        Problem(
                            path,
                            None,
                            f"duplicate of {kept[digest]} (identical headers and pixels); skipped so it is used once",
                        ),
                    ],
                )
            else:
                kept[digest] = path


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _reason(exc: Exception, path: str) -> str:
    """The error message without a leading repetition of the path."""
    text = str(exc)
    for prefix in (f"{path}: ", f"{path}"):
        if text.startswith(prefix):
            return text[len(prefix) :].lstrip("[]0123456789: ")
    return text


def _entry(info: HduInfo, prof: Profile, *, multi: bool) -> Entry:
    header = info.header
    chip = prof.lookup(header, "chip")
    if chip is None or (multi and str(chip).upper() == "PRIMARY"):
        chip = info.extname if info.extname and info.extname.upper() != "PRIMARY" else f"HDU{info.index}"
    chip = str(chip)
    cls = prof.classify(header)
    layout = prof.chip_layout(header, info.shape, chip=chip, path=info.path, hdu=info.index, bitpix=info.bitpix)
    filt = prof.lookup(header, "filter")
    date = prof.lookup(header, "date")
    obj = prof.lookup(header, "object")
    return Entry(
        path=info.path,
        hdu=info.index,
        extname=info.extname,
        chip=chip,
        imagetyp=cls.imagetyp,
        label=cls.label,
        exptime=prof.exptime(header),
        filter=None if filt is None else str(filt).strip(),
        date=None if date is None else str(date),
        object=None if obj is None else str(obj),
        shape=tuple(info.shape),
        dtype=_dtype_name(info),
        kind=info.kind,
        profile=prof.name,
        layout=layout,
        size=info.size,
        mtime_ns=info.mtime_ns,
        header=header,
        info=info,
    )
