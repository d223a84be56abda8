"""``reduce`` on real frames (Lick/Kast blue, WHT/ISIS red) against an eager numpy/astropy
reduction written out step by step."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import sigma_clip

from ccdask.cli import main
from ccdask.night._reduce import reduce


def _clipped_mean(stack: np.ndarray) -> np.ndarray:
    clipped = sigma_clip(stack, axis=0, sigma=3.0, maxiters=5, cenfunc="median", stdfunc="mad_std")
    return clipped.mean(axis=0).filled(np.nan).astype(np.float32)


def _kast_calibrate(raw: np.ndarray) -> np.ndarray:
    """Overscan per row (median of the amp's 32 columns), trim, gain 1 (Kast header GAIN=1)."""
    raw = raw.astype(np.float32)
    out = np.empty((350, 2048), np.float32)
    for data, over in ((slice(0, 1024), slice(2048, 2080)), (slice(1024, 2048), slice(2080, 2112))):
        level = np.median(raw[:, over].astype(np.float64), axis=1).astype(np.float32)
        out[:, data] = raw[:, data] - level[:, None]
    return out


def _sample_median(img: np.ndarray) -> np.float32:
    # ccdask's documented normalising statistic: the median of a fixed grid of at most 2**18 pixels
    step = int(np.ceil(np.sqrt(img.size / 2**18)))
    v = img[::step, ::step]
    return np.float32(np.median(v[np.isfinite(v)].astype(np.float64)))


@pytest.mark.real
def test_kast_night_equals_eager_reference(kast_dir, tmp_path):
    result = reduce(kast_dir, tmp_path / "out", client="threads", config={"read_noise": "overscan"})
    assert sorted(p.rsplit("/", 1)[1] for p in result.outputs) == ["b24.fits", "b27.fits"]
    assert "1 arc" in " ".join(result.plan.notes)

    read = lambda n: fits.getdata(kast_dir / n).astype(np.float32)  # noqa: E731
    bias = _clipped_mean(np.stack([_kast_calibrate(read(f"b2{i}.fits.gz")) for i in (1, 2, 3)]))
    flats = []
    for i in (1, 2, 3):
        f = _kast_calibrate(read(f"b1{i}.fits.gz")) - bias
        flats.append(f / _sample_median(f))
    flat = _clipped_mean(np.stack(flats))
    flat = flat / _sample_median(flat)
    with fits.open(tmp_path / "out" / "masters" / "flat_NONE.fits") as h:
        np.testing.assert_allclose(h[1].data, flat, rtol=2e-6, atol=2e-6)
    with fits.open(tmp_path / "out" / "masters" / "bias.fits") as h:
        np.testing.assert_allclose(h[1].data, bias, rtol=1e-6, atol=1e-3)

    sci = (_kast_calibrate(read("b27.fits.gz")) - bias).astype(np.float64) / np.maximum(flat, 0.1)
    with fits.open(tmp_path / "out" / "reduced" / "b27.fits") as h:
        got, dqa = h["SCI", 1].data, h["DQ", 1].data
        assert got.shape == (350, 2048) and h["SCI", 1].header["EXTVER"] == 1
        # a spectroscopic dome flat: the blue end is nearly dark, below flat.min_value (0.1)
        assert np.all(dqa[flat < 0.1] & 1)
        good = dqa == 0
        assert good.mean() > 0.7
        np.testing.assert_allclose(got[good], sci[good].astype(np.float32), rtol=1e-5, atol=2e-3)


@pytest.mark.real
def test_isis_biases_and_science_without_flats(isis_dir, tmp_path):
    cfg = tmp_path / "isis.toml"
    cfg.write_text('profile = "wht_isis_red"\n[flat]\nenabled = false\n[cosmics]\nmethod = "none"\n')
    raw = [str(p) for p in sorted(isis_dir.glob("r27009*.fit.gz")) + sorted(isis_dir.glob("r270100*.fit.gz"))]
    raw += [str(isis_dir / "r2701253.fit.gz")]
    code = main(["reduce", *raw, "--out", str(tmp_path / "out"), "--config", str(cfg), "--workers", "1"])
    assert code == 0
    gain = 0.98

    def calibrate(name):
        d = fits.getdata(isis_dir / name, 1).astype(np.float32)
        level = np.median(d[4109:4190, :].astype(np.float64), axis=0).astype(np.float32)
        return (d[:4096, :] - level[None, :]) * np.float32(gain)

    bias = _clipped_mean(np.stack([calibrate(p.rsplit("/", 1)[1]) for p in raw[:-1]]))
    with fits.open(tmp_path / "out" / "masters" / "bias.fits") as h:
        assert h["REDPLUS"].header["NCOMBINE"] == 11
        np.testing.assert_allclose(h["REDPLUS"].data, bias, rtol=1e-6, atol=1e-3)
    with fits.open(tmp_path / "out" / "reduced" / "r2701253.fits") as h:
        good = h["DQ", 1].data == 0
        np.testing.assert_allclose(
            h["SCI", 1].data[good], (calibrate("r2701253.fit.gz") - bias)[good], rtol=1e-5, atol=2e-3
        )
