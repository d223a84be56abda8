"""docs/coadd.md's notebook-style cell runs as written and makes the figure the page shows."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "coadd.md"


def _cell() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/coadd.md should hold exactly one python cell"
    return blocks[0]


def test_coadd_doc_cell_runs(tmp_path):
    from astropy.io import fits

    here = os.getcwd()
    out = io.StringIO()
    try:
        os.chdir(tmp_path)
        with contextlib.redirect_stdout(out):
            exec(compile(_cell(), str(DOC), "exec"), {"__name__": "__coadd_doc__"})
    finally:
        os.chdir(here)
    assert (tmp_path / "coadd.png").stat().st_size > 10_000
    with fits.open(tmp_path / "coadd.fits") as h:
        assert [x.name for x in h[1:]] == ["SCI", "VAR", "DQ", "COVERAGE", "EXPOSURE"]
        shape = h["SCI"].data.shape
        top = int(h["COVERAGE"].data.max())
    assert out.getvalue().strip() == f"{shape} {top} frames at most"
    assert (DOC.parent / "coadd.png").exists(), "the figure the page shows"
