"""Crosstalk coefficients carried by an instrument profile: DECam's published S1 pair."""

from __future__ import annotations

from pathlib import Path

from ccdask.calibrate._crosstalk import default_flip, profile_crosstalk
from ccdask.profiles import load_profile

from .test_real_cameras import read_headers

HEADER = Path(__file__).resolve().parents[1] / "data" / "headers" / "decam" / "dec050441_S1_ccd25.hdr"


def test_decam_profile_carries_the_published_s1_coefficients_without_applying_them():
    prof = load_profile("decam")
    table = profile_crosstalk(prof)
    assert table is not None and not prof.crosstalk_apply
    header = read_headers(HEADER)[25]
    layout = prof.chip_layout(header, (4146, 2160), chip="S1")  # the raw CCD: 2160 x 4146
    table.check({"S1": layout}, all_chips=True)  # S1's amplifiers A and B exist
    terms = {(t.source, t.victim): t for t in table.for_chip(layout)}
    # the CTIO file's rows "ccd25B ccd25A 1.34e-04" and "ccd25A ccd25B 3.16e-04" (victim first)
    assert terms[("A", "B")].linear == 1.34e-4 and terms[("B", "A")].linear == 3.16e-4
    amps = {a.name: a for a in layout.amplifiers}
    assert default_flip(amps["A"], amps["B"])  # the two amplifiers read towards opposite ends
