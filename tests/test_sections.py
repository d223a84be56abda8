"""FITS sections: parsing, validation, slices, round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccdask.errors import SectionError
from ccdask.sections import Section, parse_section, section_from_slices


def test_fits_order_and_one_based_inclusive():
    sec = Section.parse("[17:528,1:520]")
    assert sec.slices == (slice(0, 520, 1), slice(16, 528, 1))
    assert sec.shape == (520, 512)
    image = np.arange(520 * 536).reshape(520, 536)
    # numpy equivalent written independently: rows 1..520, columns 17..528 (1-based)
    assert np.array_equal(image[sec.slices], image[0:520, 16:528])


def test_padded_section_from_saao_header():
    sec = Section.parse("[   4:  13,   1: 520]")
    assert (sec.x.start, sec.x.stop, sec.y.start, sec.y.stop) == (4, 13, 1, 520)
    assert str(sec) == "[4:13,1:520]"


def test_flipped_range_reverses_axis():
    image = np.arange(6 * 8).reshape(6, 8)
    sec = parse_section("[8:1,2:5]", image.shape)
    assert sec.flipped == (False, True)
    assert np.array_equal(image[sec.slices], image[1:5, ::-1])
    assert sec.normalized().slices == (slice(1, 5, 1), slice(0, 8, 1))


def test_star_and_flipped_star_resolve_to_whole_axis():
    image = np.arange(5 * 7).reshape(5, 7)
    sec = parse_section("[*,-*]", image.shape)
    assert np.array_equal(image[sec.slices], image[::-1, :])


def test_single_pixel_range():
    sec = parse_section("[3,4]", (10, 10))
    assert sec.shape == (1, 1)
    assert sec.slices == (slice(3, 4, 1), slice(2, 3, 1))


@pytest.mark.parametrize(
    "text", ["1:10,1:10", "[1:10]", "[1:10,1:10,1:2]", "[a:3,1:2]", "[0:5,1:2]", "[1:5;1:2]", "", "[,]"]
)
def test_malformed_sections_raise(text):
    with pytest.raises(SectionError):
        Section.parse(text, keyword="BIASSEC")


def test_out_of_bounds_error_names_keyword_file_and_shape():
    with pytest.raises(SectionError) as info:
        parse_section("[1:966,4110:4300]", (4200, 966), keyword="BIASSEC", path="r1.fit", hdu=1)
    msg = str(info.value)
    assert "r1.fit[1]" in msg and "BIASSEC" in msg and "4200" in msg
    assert isinstance(info.value, ValueError)


def test_unresolved_star_needs_a_shape():
    with pytest.raises(SectionError):
        _ = Section.parse("[*,1:4]").slices


@st.composite
def sections_and_shapes(draw):
    ny = draw(st.integers(1, 60))
    nx = draw(st.integers(1, 60))
    y1, y2 = draw(st.integers(1, ny)), draw(st.integers(1, ny))
    x1, x2 = draw(st.integers(1, nx)), draw(st.integers(1, nx))
    pad = draw(st.sampled_from(["", " ", "   "]))
    text = f"[{pad}{x1}:{pad}{x2},{pad}{y1}:{pad}{y2}]"
    return text, (ny, nx), (x1, x2, y1, y2)


@given(sections_and_shapes())
def test_round_trip_and_agreement_with_explicit_indexing(case):
    text, shape, (x1, x2, y1, y2) = case
    image = np.arange(shape[0] * shape[1]).reshape(shape)
    sec = parse_section(text, shape)
    # the independent reference: build the index lists from the 1-based inclusive ranges
    rows = np.arange(y1, y2 + (1 if y2 >= y1 else -1), 1 if y2 >= y1 else -1) - 1
    cols = np.arange(x1, x2 + (1 if x2 >= x1 else -1), 1 if x2 >= x1 else -1) - 1
    assert np.array_equal(image[sec.slices], image[np.ix_(rows, cols)])
    assert sec.shape == (len(rows), len(cols))
    assert Section.parse(str(sec)) == sec
    assert section_from_slices(*sec.slices, shape) == sec
