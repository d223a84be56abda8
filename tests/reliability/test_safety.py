"""Inputs are sacred and outputs are contained.

* Raw files and their folder are only ever read: a reduction of a read-only raw folder works,
  every raw byte (and mode and mtime) is unchanged afterwards, and no ``open``/``os.open``/
  ``mmap`` of a raw path asks for write access (audited with ``sys.addaudithook``).
* Nothing is written outside the output folder and the cache, and output names come from raw
  file names, never from header values: OBJECT/FILTER/EXTNAME/CCDNAME holding ``../..``,
  slashes or absolute paths change nothing outside OUT.
"""

from __future__ import annotations

import mmap
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdask.night._reduce import reduce

from .support import (
    assert_complete_fits,
    copy_raw,
    sha256_tree,
    snapshot,
)

# ------------------------------------------------------------------------------ audit hook
# An audit hook cannot be removed, so one hook is installed once and does nothing unless a
# test sets _AUDIT["root"].
_AUDIT: dict = {"root": None, "writes": [], "reads": 0}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_MUTATING_EVENTS = {
    "os.remove",
    "os.rename",
    "os.chmod",
    "os.chown",
    "os.utime",
    "os.truncate",
    "os.mkdir",
    "os.rmdir",
    "os.link",
    "os.symlink",
    "shutil.rmtree",
    "shutil.move",
}


def _under_root(path) -> bool:
    root = _AUDIT["root"]
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        return False
    p = os.path.abspath(os.fspath(path))
    return p == root or p.startswith(root + os.sep)


def _hook(event, args):
    if _AUDIT["root"] is None:
        return
    try:
        if event == "open":
            path, mode, flags = args
            if not _under_root(path):
                return
            wants_write = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS
            )
            if wants_write:
                _AUDIT["writes"].append((event, str(path), mode, flags))
            else:
                _AUDIT["reads"] += 1
        elif event == "mmap.__new__":
            fileno, _length, access, _offset = args
            if fileno == -1 or access in (mmap.ACCESS_READ, mmap.ACCESS_COPY):
                return
            target = os.readlink(f"/proc/self/fd/{fileno}")
            if _under_root(target):
                _AUDIT["writes"].append((event, target, access, None))
        elif event in _MUTATING_EVENTS and any(_under_root(a) for a in args):
            _AUDIT["writes"].append((event, *map(str, args)))
    except Exception:  # an audit hook must never break the program it watches
        return


sys.addaudithook(_hook)


def _make_read_only(root: Path) -> None:
    for p in [*root.rglob("*"), root]:
        mode = stat.S_IMODE(p.stat().st_mode)
        p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _make_writable(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        p.chmod(stat.S_IMODE(p.stat().st_mode) | stat.S_IWUSR)


# ------------------------------------------------------------------------------ inputs
@pytest.mark.slow
def test_raw_files_are_only_read(night, reference, tmp_path):
    raw = copy_raw(night, tmp_path / "raw")
    _make_read_only(raw)
    before = sha256_tree(raw)
    _AUDIT.update(root=str(raw.resolve()), writes=[], reads=0)
    try:
        result = reduce(raw, tmp_path / "out", client="threads")
    finally:
        _AUDIT["root"] = None
        after = sha256_tree(raw)
        _make_writable(raw)
    assert _AUDIT["writes"] == [], "a raw path was opened for writing or changed"
    assert _AUDIT["reads"] > len(before), "the audit hook saw no reads: is it working?"
    assert after == before  # every byte, mode bit and mtime
    assert not (set(os.listdir(raw)) - {Path(p).name for p in before})
    assert len(result.outputs) == 2
    for path in result.outputs:
        assert_complete_fits(Path(path))


def test_raw_files_are_only_read_through_cache_and_rerun(night, tmp_path):
    """A second run (everything cached or skipped) reads headers only and writes nothing raw."""
    raw = copy_raw(night, tmp_path / "raw")
    cfg = {"cosmics": {"method": "none"}, "output": {"qa": False}}
    reduce(raw, tmp_path / "out", client="threads", config=cfg)
    _make_read_only(raw)
    before = sha256_tree(raw)
    _AUDIT.update(root=str(raw.resolve()), writes=[], reads=0)
    try:
        again = reduce(raw, tmp_path / "out", client="sync", config=cfg)
    finally:
        _AUDIT["root"] = None
        after = sha256_tree(raw)
        _make_writable(raw)
    assert _AUDIT["writes"] == []
    assert after == before
    assert again.outputs == [] and len(again.skipped) == 2


# ------------------------------------------------------------------------------ containment
def _hostile(raw: Path, night, elsewhere: Path) -> None:
    """Header values that look like paths, in every raw file (consistently, so the plan holds)."""
    for p in night.all_files:
        with fits.open(raw / p.name, mode="update") as h:
            h[0].header["OBJECT"] = "../../object-escape"
            if h[0].header.get("FILTER") == "g":
                h[0].header["FILTER"] = "../../evil"
            h[1].header["EXTNAME"] = "../ext-escape"
            h[1].header["CCDNAME"] = "../../../ccd-escape"
            h[2].header["EXTNAME"] = str(elsewhere / "ext2")
            h[2].header["CCDNAME"] = str(elsewhere / "ccd2")


@pytest.mark.slow
def test_header_values_never_become_paths(night, tmp_path, monkeypatch):
    raw = copy_raw(night, tmp_path / "raw")
    elsewhere = tmp_path / "elsewhere"
    _hostile(raw, night, elsewhere)
    out = tmp_path / "work" / "deep" / "out"
    out.parent.mkdir(parents=True)  # OUT's own parents are fair game; everything else is not
    cache = tmp_path / "cache"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # relative writes would land here
    before = snapshot(tmp_path, exclude=(out, cache))
    result = reduce(raw, out, client="threads", cache=cache)
    after = snapshot(tmp_path, exclude=(out, cache))
    assert after == before, f"written outside OUT and the cache: {sorted(after ^ before)}"
    assert not elsewhere.exists()

    assert sorted(p.name for p in (out / "reduced").iterdir()) == ["science_g_000.fits", "science_r_000.fits"]
    masters = sorted(p.name for p in (out / "masters").iterdir())
    assert masters == ["bias.fits", "dark.fits", "flat__.._evil.fits", "flat_r.fits"]
    for p in out.rglob("*"):
        assert p.resolve().is_relative_to(out.resolve())
        if p.parent.name in ("reduced", "masters", "qa"):
            assert p.is_file(), f"{p}: a folder made from a header value"
    with fits.open(out / "masters" / "flat__.._evil.fits", checksum=True) as h:
        assert h[1].header["FILTER"] == "../../evil"  # the value is kept, as a value
        assert [x.header["CCDNAME"] for x in h[1:]][::3] == ["../../../ccd-escape", str(elsewhere / "ccd2")]
    with fits.open(result.outputs[0], checksum=True) as h:
        assert h["SCI", 1].header["CCDNAME"] == "../../../ccd-escape"
        assert h[0].header["OBJECT"] == "../../object-escape"
        assert np.isfinite(h["SCI", 1].data).mean() > 0.9
