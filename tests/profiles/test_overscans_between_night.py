"""Issue 11's first bullet: a night whose chips have their two overscans between the amplifiers.

Each 512 x 560 raw chip reads ``A data | A overscan | B overscan | B data`` (DATASECA/B,
BIASSECA/B, GAINA/B, RDNOISEA/B, SATURATA/B and a chip DETSEC, no CCDSECA/B): the layout a
whole night used to be rejected for ("amplifier ccdsecs cover 262144 pixels of a 512x560
chip"). The night is written here with astropy, with known truth, and reduced by the
``ccdask reduce`` command; the science frames must come out as the injected signal.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from ccdask.cli._main import EXIT_OK, main

NY, NX, HALF, OVER = 512, 560, 256, 24
GAINS = {("CCD1", "A"): 1.6, ("CCD1", "B"): 2.2, ("CCD2", "A"): 1.9, ("CCD2", "B"): 1.3}
CHIPS = ("CCD1", "CCD2")


def _truth():
    y, x = np.mgrid[0:NY, 0 : 2 * HALF].astype(np.float64)
    flat = {c: 1.0 + 0.04 * np.sin(x / 37.0 + k) + 0.03 * np.cos(y / 51.0) + 0.02 * k for k, c in enumerate(CHIPS)}
    bias = {c: 3.0 * np.sin(y / 9.0 + x / 23.0 + k) for k, c in enumerate(CHIPS)}
    # science signal in electrons on the assembled focal plane (chips side by side in DETSEC)
    sky = {}
    for k, c in enumerate(CHIPS):
        fx = x + k * 2 * HALF
        s = 400.0 + 0.8 * fx + 0.5 * y
        s += 5000.0 * np.exp(-((fx - 700.0) ** 2 + (y - 400.0) ** 2) / (2 * 6.0**2))  # a star on CCD2
        s[:6, -6:] += 2000.0  # a corner block
        sky[c] = s
    return flat, bias, sky


def _raw_chip(chip, k, electrons, bias, frame):
    """Raw ADU of one chip: per amplifier signal/gain + bias structure + its overscan level
    (drifting with the row), the overscans between the two data sections."""
    raw = np.zeros((NY, NX), dtype=np.float64)
    rows = np.arange(NY)[:, None]
    for amp, data, over, sl in (
        ("A", slice(0, HALF), slice(HALF, HALF + OVER), slice(0, HALF)),
        ("B", slice(HALF + 2 * OVER, NX), slice(HALF + OVER, HALF + 2 * OVER), slice(HALF, 2 * HALF)),
    ):
        level = 800.0 + 40.0 * frame + (150.0 if amp == "B" else 0.0) + 25.0 * k + 2.0 * np.sin(rows / 17.0)
        raw[:, data] = electrons[:, sl] / GAINS[(chip, amp)] + bias[:, sl] + level
        raw[:, over] = level
    return raw.astype(np.float32)


def _write(path, imagetyp, exptime, chips_electrons, bias, frame):
    prim = fits.Header()
    prim["IMAGETYP"] = imagetyp
    prim["EXPTIME"] = exptime
    prim["FILTER"] = "r"
    prim["DATE-OBS"] = f"2024-03-01T0{frame % 10}:00:00"
    hdus = [fits.PrimaryHDU(header=prim)]
    for k, c in enumerate(CHIPS):
        h = fits.Header()
        h["EXTNAME"] = c
        h["DETSEC"] = f"[{k * 2 * HALF + 1}:{(k + 1) * 2 * HALF},1:{NY}]"
        h["DATASECA"] = f"[1:{HALF},1:{NY}]"
        h["BIASSECA"] = f"[{HALF + 1}:{HALF + OVER},1:{NY}]"
        h["BIASSECB"] = f"[{HALF + OVER + 1}:{HALF + 2 * OVER},1:{NY}]"
        h["DATASECB"] = f"[{HALF + 2 * OVER + 1}:{NX},1:{NY}]"
        for amp in "AB":
            h[f"GAIN{amp}"] = GAINS[(c, amp)]
            h[f"RDNOISE{amp}"] = 4.0
            h[f"SATURAT{amp}"] = 60000.0
        hdus.append(fits.ImageHDU(_raw_chip(c, k, chips_electrons[c], bias[c], frame), header=h))
    fits.HDUList(hdus).writeto(path)


def test_overscans_between_amplifiers_night_reduces(tmp_path, capsys):
    flat, bias, sky = _truth()
    raw = tmp_path / "raw"
    raw.mkdir()
    zero = {c: np.zeros((NY, 2 * HALF)) for c in CHIPS}
    frame = 0
    for i in range(3):
        _write(raw / f"bias_{i}.fits", "zero", 0.0, zero, bias, frame)
        frame += 1
    for i in range(3):
        _write(raw / f"flat_{i}.fits", "flat", 5.0, {c: 20000.0 * flat[c] for c in CHIPS}, bias, frame)
        frame += 1
    _write(raw / "sci_0.fits", "object", 60.0, {c: sky[c] * flat[c] for c in CHIPS}, bias, frame)
    cfg = tmp_path / "night.toml"
    cfg.write_text('[cosmics]\nmethod = "none"\n[output]\nqa = false\n')
    out = tmp_path / "out"
    assert (
        main(["reduce", str(raw), "--out", str(out), "--config", str(cfg), "--skip", "dark", "--workers", "1"])
        == EXIT_OK
    )
    capsys.readouterr()
    # the flat master is the response over its focal-plane median: science = signal x that median
    median = np.median(np.concatenate([flat[c].ravel() for c in CHIPS]))
    with fits.open(out / "reduced" / "sci_0.fits") as hdul:
        scis = {h.header["CCDNAME"]: h.data for h in hdul if h.name == "SCI"}
    assert sorted(scis) == list(CHIPS)
    for c in CHIPS:
        expected = sky[c] * median
        assert scis[c].shape == (NY, 2 * HALF)
        np.testing.assert_allclose(scis[c], expected, rtol=2e-5, atol=0.05)
    # the star is on CCD2 where it was injected (amplifier A's half of that chip)
    assert np.unravel_index(np.argmax(scis["CCD2"]), scis["CCD2"].shape) == (400, 700 - 2 * HALF)
