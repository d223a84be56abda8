"""ccdask.combine against IRAF's imcombine (run through ``irafcl``) on FITS files written by astropy.

Where the two define the same operation the results are compared bit for bit (both write float32):

* IRAF ``reject=minmax`` (``nlow``/``nhigh`` by count) is ccdask's ``clip="extrema"``: integer
  valued stacks make ties, which both rank so that exactly ``nlow``/``nhigh`` values go;
* ``reject=none`` with ``combine=average``/``median`` (even counts: mean of the middle two);
* ``scale=exposure`` (``expname=EXPTIME``): IRAF normalises the factors to the first frame
  (``t_0 / t_i``), ccdask to the mean exposure (``mean(t) / t_i``), so the results differ by
  the constant ``t_0 / mean(t)``; after that factor they agree to float32 rounding.

* IRAF ``reject=sigclip`` is ccdask's ``clip="sigclip"`` (``mclip`` yes/no, ``nkeep`` positive
  and negative, 3 to 12 frames, ties), ``combine=average``: equal to float32 rounding (IRAF
  sums in single precision, ccdask in double; 4 float32 ulps at the stack's level). Not reproduced, so not
  tested: thresholds below 1 sigma with ``mclip=no`` (IRAF keeps more values), and the ``nkeep``
  restoring step where several rejected values are equal (IRAF puts back a different subset:
  e.g. 8 rounded frames, ``mclip=no``, 1 sigma, ``nkeep=4``; 5 rounded frames, 1 sigma,
  ``nkeep=3``) or, in one 8-frame ``mclip=no`` pixel of 256, where it keeps one value more.

* IRAF ``reject=ccdclip`` and ``reject=crreject`` are ccdask's ``clip="ccdclip"``/``"crreject"``
  (noise model ``rdnoise``/``gain``/``snoise`` as numbers or header keywords, ``mclip`` yes/no,
  2 to 12 frames): the same number of rejected values at every pixel (IRAF's ``nrejmasks``) and
  the result to float32 rounding. IRAF's mean center excludes the lowest and highest value in
  every iteration while more than two remain (its help says only the first): ccdask follows
  IRAF.
* IRAF ``reject=pclip`` is ``clip="pclip"`` (``pclip`` as a fraction and as a number of pixels,
  both signs, 3 to 10 frames, ties): same rejected counts, result to float32 rounding. IRAF keeps
  only values strictly inside ``lsigma``/``hsigma`` times the width (the percentile pixel goes at
  one sigma) and rejects nothing when the width is 0; ccdask does the same. Not reproduced, so
  not tested: which values ``nkeep`` (above 1) puts back; IRAF's pclip does not put back the
  nearest value first as its sigclip does (e.g. 9 frames, ``pclip=-0.3``, 1 sigma, ``nkeep=3``:
  it puts back two values at 1.7177 and 1.7192 from the median where one is enough).

* IRAF ``reject=avsigclip`` is ``clip="avsigclip"`` (3 to 12 frames, ``mclip`` yes/no, ``nkeep``
  positive and negative, thresholds so that the number of values varies): same rejected counts,
  result to float32 rounding. IRAF's sigma factor per line, as measured, is
  ``g = sum((v - c)²) / sum(n c)`` over the line's pixels with at least three values and
  ``c > 0``; the mean center excludes the extremes only in the first iteration. Not reproduced,
  so not tested: a few pixels where several frames are hit or every value falls outside the
  bounds (other seeds of the stacks here: 4 of 480 pixels of 12 frames at 2.5 sigma, 1 of 480
  of 4 frames at 1.5 sigma, mean center).

* IRAF ``grow`` is ``grow``: the disk ``dy² + dx² <= grow²`` in the rejected value's frame, and the
  results after growing with five rejection kinds, to float32 rounding. IRAF grows whatever
  ``nkeep`` is (its help says otherwise) and uses the ungrown value only where nothing is left;
  its number-rejected mask counts every value at those pixels, so the counts are compared
  elsewhere. Not reproduced, so not tested: pixels where growing leaves nothing and a threshold
  rejected a value (2 of 480 in a 5-frame ``lthreshold`` stack: IRAF's value there is neither
  the ungrown nor the blank one).

* IRAF ``scale=mode/mean``, ``zero=mode/mean``, ``statsec``, ``scale/zero/weight=!KEYWORD`` and
  ``weight=exposure`` are ccdask's options with ``normalize="first"`` (IRAF leaves the first frame
  as it is): equal to float32 rounding, and the factors equal the ones IRAF logs. ``scale`` and
  ``zero=median``: IRAF's median statistic is the ``n // 2``-th smallest value of the sample
  (tested), ccdask's the exact median. Rejection on scaled frames is IRAF's with ``sigscale`` off.

Not compared: ``combine=median`` after sigclip (where an even number survives IRAF does not
always average the middle two, ccdask does). NaN has no counterpart in IRAF's arithmetic (it
has no ignore-NaN rule; bad pixels go through masks), so the stacks here are finite.
"""

from __future__ import annotations

import numpy as np
import pytest

from ccdask.combine import combine
from tests.combine.iraf import imcombine, imcombine_rejected, require_iraf, write_frames


@pytest.fixture(autouse=True)
def _iraf():
    require_iraf()


def integer_stack(n, seed, ny=6, nx=7):
    """Rounded values (many ties) with one cosmic ray and one low pixel."""
    rng = np.random.default_rng(seed)
    stack = np.round(rng.normal(100.0, 2.0, (n, ny, nx))).astype(np.float32)
    stack[n - 1, 0, 0] = 5000.0
    stack[0, 1, 1] = -40.0
    return stack


@pytest.mark.parametrize(("n", "nlow", "nhigh"), [(3, 1, 1), (4, 1, 1), (4, 0, 2), (5, 2, 1), (5, 1, 0), (6, 0, 1)])
@pytest.mark.parametrize("method", ["average", "median"])
def test_minmax_by_count_equals_iraf(tmp_path, n, nlow, nhigh, method):
    stack = integer_stack(n, seed=n + 10 * nlow + 100 * nhigh)
    paths = write_frames(tmp_path, stack)
    ref, _ = imcombine(paths, tmp_path, combine=method, reject="minmax", nlow=nlow, nhigh=nhigh)
    ours = combine(paths, method="mean" if method == "average" else "median", clip="extrema", nlow=nlow, nhigh=nhigh)
    res = ours.compute()
    assert (res.count == n - nlow - nhigh).all()
    np.testing.assert_array_equal(res.data, ref.astype(np.float32))


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("method", ["average", "median"])
def test_no_rejection_equals_iraf(tmp_path, n, method):
    stack = integer_stack(n, seed=n) + np.float32(0.25)
    paths = write_frames(tmp_path, stack)
    ref, _ = imcombine(paths, tmp_path, combine=method, reject="none")
    res = combine(paths, method="mean" if method == "average" else "median", clip="none").compute()
    np.testing.assert_array_equal(res.data, ref.astype(np.float32))


def test_exposure_scaling_equals_iraf_up_to_its_normalisation(tmp_path):
    rng = np.random.default_rng(5)
    levels = np.array([100.0, 180.0, 140.0, 260.0, 90.0])
    stack = (rng.normal(1.0, 0.02, (5, 7, 9)) * levels[:, None, None]).astype(np.float32)
    exptime = levels / 10.0
    paths = write_frames(tmp_path, stack, [{"EXPTIME": float(t)} for t in exptime])
    ref, log = imcombine(paths, tmp_path, combine="average", reject="none", scale="exposure", expname="EXPTIME")
    assert "scale = exposure" in log
    res = combine(paths, clip="none", scale="exposure").compute()
    np.testing.assert_allclose(np.asarray(res.scale_factors), exptime.mean() / exptime, rtol=1e-15)
    np.testing.assert_allclose(res.data * (exptime[0] / exptime.mean()), ref, rtol=2 * np.finfo(np.float32).eps)
    # without the normalisation the levels differ: the comparison above is not vacuous
    assert not np.allclose(res.data, ref, rtol=1e-3)


@pytest.mark.parametrize(
    ("n", "mclip", "sigma", "nkeep", "rounded"),
    [
        (3, True, 1.0, 1, False),
        (3, True, 1.0, 1, True),
        (4, True, 1.0, 1, False),
        (4, True, 1.0, 1, True),
        (4, False, 1.0, 2, False),
        (4, False, 1.0, 2, True),
        (5, True, 2.0, 1, True),
        (5, False, 2.0, 1, True),
        (5, True, 1.0, 3, False),
        (5, True, 0.6, 1, False),
        (5, True, 0.6, 1, True),
        (6, False, 1.5, -2, False),
        (6, False, 1.5, -2, True),
        (8, True, 0.8, 1, False),
        (12, True, 1.2, 2, False),
        (12, True, 1.2, 2, True),
        (12, False, 2.0, 1, False),
        (12, False, 2.0, 1, True),
        (10, False, 3.0, -1, True),
    ],
)
def test_sigclip_equals_iraf(tmp_path, n, mclip, sigma, nkeep, rounded):
    rng = np.random.default_rng(n + int(10 * sigma))
    stack = rng.normal(100.0, 3.0, (n, 16, 16))
    stack[rng.random(stack.shape) < 0.08] += 60.0
    if rounded:
        stack = np.round(stack)  # ties, also at the bounds
    stack = stack.astype(np.float32)
    paths = write_frames(tmp_path, stack)
    ref, log = imcombine(
        paths, tmp_path, combine="average", reject="sigclip", lsigma=sigma, hsigma=sigma, mclip=mclip, nkeep=nkeep
    )
    assert "reject = sigclip" in log
    res = combine(paths, clip="sigclip", sigma_lower=sigma, sigma_upper=sigma, mclip=mclip, nkeep=nkeep).compute()
    np.testing.assert_allclose(res.data, ref, rtol=0, atol=4 * np.spacing(np.float32(160.0)))
    if sigma <= 1.0:
        assert (res.count < n).any()  # something was rejected (not always possible above: 5 frames, 2 sigma)


def test_cli_reject_sigclip_equals_iraf(tmp_path):
    import argparse

    from astropy.io import fits

    from ccdask.cli._combine import register, run

    rng = np.random.default_rng(42)
    stack = rng.normal(100.0, 3.0, (7, 12, 10))
    stack[rng.random(stack.shape) < 0.1] += 80.0
    paths = write_frames(tmp_path, stack.astype(np.float32))
    ref, _ = imcombine(
        paths, tmp_path, combine="average", reject="sigclip", lsigma=2.0, hsigma=2.5, mclip=False, nkeep=-3
    )
    parser = argparse.ArgumentParser(prog="ccdask")
    register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "master.fits"
    argv = ["combine", *map(str, paths), "-o", str(out), "--reject", "sigclip", "--no-mclip", "--nkeep", "-3"]
    args = parser.parse_args([*argv, "--sigma-lower", "2", "--sigma-upper", "2.5"])
    assert run(args) == 0
    with fits.open(out) as hdul:
        np.testing.assert_allclose(hdul[0].data, ref, rtol=0, atol=4 * np.spacing(np.float32(180.0)))
        assert hdul[0].header["CMBCLIP"] == "sigclip" and hdul[0].header["CMBMCLIP"] is False
        assert hdul[0].header["CMBNKEEP"] == -3
        assert (hdul["COUNT"].data < 7).any() and (hdul["COUNT"].data >= 4).all()


def test_negative_nkeep_only_with_sigclip():
    from ccdask.combine import CombineConfig
    from ccdask.errors import ConfigError

    assert CombineConfig(clip="sigclip", nkeep=-2).nkeep == -2
    with pytest.raises(ConfigError, match="negative only with clip='sigclip'"):
        CombineConfig(clip="sigma", nkeep=-2)


def noisy_stack(n, seed, sky=100.0, noise=9.0, ny=16, nx=16):
    """Sky with Poisson-like scatter and 8 % cosmic-ray hits (+80), float32, no ties."""
    rng = np.random.default_rng(seed)
    stack = rng.normal(sky, noise, (n, ny, nx))
    stack[rng.random(stack.shape) < 0.08] += 80.0
    return stack.astype(np.float32)


@pytest.mark.parametrize(
    ("kind", "n", "mclip", "sigma", "nkeep", "rdnoise", "gain", "snoise"),
    [
        ("ccdclip", 5, True, 3.0, 1, 5.0, 2.0, 0.0),
        ("ccdclip", 5, False, 3.0, 1, 5.0, 2.0, 0.0),
        ("ccdclip", 8, True, 2.0, 1, 10.0, 1.5, 0.01),
        ("ccdclip", 8, False, 2.0, 1, 10.0, 1.5, 0.01),
        ("ccdclip", 3, True, 2.0, 1, 4.0, 1.0, 0.0),
        ("ccdclip", 3, False, 1.5, 1, 3.0, 1.0, 0.0),
        ("ccdclip", 4, False, 1.0, 1, 3.0, 1.0, 0.0),
        ("ccdclip", 12, True, 1.0, 2, 3.0, 1.0, 0.0),
        ("ccdclip", 10, False, 1.5, -3, 3.0, 1.0, 0.0),
        ("crreject", 2, True, 3.0, 1, 4.0, 1.0, 0.0),
        ("crreject", 2, False, 3.0, 1, 4.0, 1.0, 0.0),
        ("crreject", 6, False, 2.0, 1, 4.0, 1.0, 0.0),
        ("crreject", 7, True, 1.0, 1, 6.0, 2.5, 0.02),
    ],
)
def test_ccdclip_and_crreject_equal_iraf(tmp_path, kind, n, mclip, sigma, nkeep, rdnoise, gain, snoise):
    stack = noisy_stack(n, seed=n + 100 * int(mclip))
    paths = write_frames(tmp_path, stack)
    iraf_params = dict(lsigma=sigma, hsigma=sigma, mclip=mclip, nkeep=nkeep)
    noise = dict(rdnoise=str(rdnoise), gain=str(gain), snoise=str(snoise))
    ref, nrej, log = imcombine_rejected(paths, tmp_path, combine="average", reject=kind, **iraf_params, **noise)
    assert f"reject = {kind}" in log
    res = combine(
        paths,
        clip=kind,
        sigma_lower=sigma,
        sigma_upper=sigma,
        mclip=mclip,
        nkeep=nkeep,
        rdnoise=rdnoise,
        gain=gain,
        snoise=snoise,
    ).compute()
    np.testing.assert_array_equal(n - res.count, nrej)
    assert nrej.sum() > 0  # something was rejected: the comparison is not vacuous
    np.testing.assert_allclose(res.data, ref, rtol=0, atol=4 * np.spacing(np.float32(180.0)))


def test_ccdclip_noise_from_header_keywords_equals_iraf(tmp_path):
    stack = noisy_stack(6, seed=3)
    cards = [{"RDNOISE": 7.0, "EGAIN": 1.8, "SNOISE": 0.01}] * 6
    paths = write_frames(tmp_path, stack, cards)
    ref, nrej, _ = imcombine_rejected(
        paths,
        tmp_path,
        combine="average",
        reject="ccdclip",
        lsigma=2.0,
        hsigma=2.0,
        rdnoise="RDNOISE",
        gain="EGAIN",
        snoise="SNOISE",
    )
    res = combine(
        paths, clip="ccdclip", sigma_lower=2.0, sigma_upper=2.0, rdnoise="RDNOISE", gain="egain", snoise="SNOISE"
    )
    assert res.config.gain == "EGAIN"  # keywords are kept (upper case) in the config
    done = res.compute()
    np.testing.assert_array_equal(6 - done.count, nrej)
    np.testing.assert_allclose(done.data, ref, rtol=0, atol=4 * np.spacing(np.float32(180.0)))
    # the same numbers given directly give the same result; different numbers do not
    same = combine(paths, clip="ccdclip", sigma_lower=2.0, sigma_upper=2.0, rdnoise=7.0, gain=1.8, snoise=0.01)
    np.testing.assert_array_equal(same.compute().data, done.data)
    other = combine(paths, clip="ccdclip", sigma_lower=2.0, sigma_upper=2.0, rdnoise=0.5, gain=1.8, snoise=0.01)
    assert (other.compute().count != done.count).any()


@pytest.mark.parametrize(
    ("n", "pclip", "sigma", "nkeep", "rounded"),
    [
        (6, -0.5, 3.0, 1, False),
        (10, -0.5, 2.0, 1, False),
        (10, 0.5, 1.5, 1, True),
        (5, -1.0, 2.0, 1, True),
        (7, 2.0, 1.0, 1, False),
        (4, -0.5, 1.0, 1, False),
        (3, -0.5, 0.5, 1, False),
        (9, -0.3, 1.0, 1, False),
    ],
)
def test_pclip_equals_iraf(tmp_path, n, pclip, sigma, nkeep, rounded):
    from ccdask.combine import pclip_offset

    rng = np.random.default_rng(n)
    stack = rng.normal(100.0, 3.0, (n, 16, 16))
    stack[rng.random(stack.shape) < 0.08] += 60.0
    if rounded:
        stack = np.round(stack)  # ties, also zero widths
    stack = stack.astype(np.float32)
    paths = write_frames(tmp_path, stack)
    ref, nrej, log = imcombine_rejected(
        paths, tmp_path, combine="average", reject="pclip", pclip=pclip, lsigma=sigma, hsigma=sigma, nkeep=nkeep
    )
    assert f"pclip = {float(pclip_offset(n, pclip)):g}." in log  # the percentile pixel IRAF used
    res = combine(paths, clip="pclip", pclip=pclip, sigma_lower=sigma, sigma_upper=sigma, nkeep=nkeep).compute()
    np.testing.assert_array_equal(n - res.count, nrej)
    assert nrej.sum() > 0
    np.testing.assert_allclose(res.data, ref, rtol=0, atol=4 * np.spacing(np.float32(160.0)))


def test_cli_reject_crreject_and_pclip_equal_iraf(tmp_path):
    import argparse

    from astropy.io import fits

    from ccdask.cli._combine import register, run

    stack = noisy_stack(5, seed=11)
    paths = write_frames(tmp_path, stack, [{"RDNOISE": 5.0, "GAIN": 2.0}] * 5)
    parser = argparse.ArgumentParser(prog="ccdask")
    register(parser.add_subparsers(dest="command", required=True))
    cases = [
        (
            ["--reject", "crreject", "--rdnoise", "RDNOISE", "--gain", "GAIN", "--sigma-upper", "2.5"],
            dict(reject="crreject", rdnoise="RDNOISE", gain="GAIN", hsigma=2.5),
        ),
        (
            ["--reject", "crreject", "--rdnoise", "RDNOISE", "--gain", "GAIN", "--grow", "1.5"],
            dict(reject="crreject", rdnoise="RDNOISE", gain="GAIN", grow=1.5),
        ),
        (
            ["--reject", "pclip", "--pclip", "-1", "--sigma-lower", "2", "--sigma-upper", "2"],
            dict(reject="pclip", pclip=-1.0, lsigma=2.0, hsigma=2.0),
        ),
    ]
    for i, (argv, params) in enumerate(cases):
        ref, nrej, _ = imcombine_rejected(paths, tmp_path / f"iraf{i}", combine="average", **params)
        out = tmp_path / f"master{i}.fits"
        assert run(parser.parse_args(["combine", *map(str, paths), "-o", str(out), *argv])) == 0
        with fits.open(out) as hdul:
            np.testing.assert_allclose(hdul[0].data, ref, rtol=0, atol=4 * np.spacing(np.float32(180.0)))
            # with grow, IRAF counts every value at the pixels it fell back to the ungrown result
            counted = nrej < 5 if "grow" in params else np.ones(nrej.shape, bool)
            np.testing.assert_array_equal((5 - hdul["COUNT"].data)[counted], nrej[counted])
            assert hdul[0].header["CMBCLIP"] == params["reject"]
            if params["reject"] == "crreject":
                assert hdul[0].header["CMBRDNS"] == "RDNOISE" and hdul[0].header["CMBGAIN"] == "GAIN"
                assert hdul[0].header.get("CMBGROW") == params.get("grow")
            else:
                assert hdul[0].header["CMBPCLIP"] == -1.0
        assert nrej.sum() > 0


@pytest.mark.parametrize(
    ("n", "mclip", "sigma", "nkeep", "seed", "thresholded"),
    [
        (5, True, 3.0, 1, 12, False),
        (5, False, 3.0, 1, 5, False),
        (5, False, 3.0, 1, 12, True),
        (8, False, 2.0, 1, 15, True),
        (8, True, 2.0, 1, 8, False),
        (6, True, 2.0, 1, 13, True),
        (4, True, 1.5, 1, 4, False),
        (3, False, 1.0, 1, 3, False),
        (12, False, 2.5, 2, 12, False),
        (10, True, 2.0, -3, 17, True),
    ],
)
def test_avsigclip_equals_iraf(tmp_path, n, mclip, sigma, nkeep, seed, thresholded):
    # Poisson-like frames (gain 2: sigma² = level / 2) with 8-10 % cosmic-ray hits; 40 columns per
    # row, since avsigclip estimates its sigma factor per image row. Thresholded: 10 % of the values
    # are junk below ``lthreshold``/``min_clip``, so the number of values varies per pixel.
    rng = np.random.default_rng(seed)
    stack = rng.normal(1000.0, np.sqrt(500.0), (n, 12, 40))
    stack[rng.random(stack.shape) < (0.1 if seed != n else 0.08)] += 300.0
    if thresholded:
        stack[rng.random(stack.shape) < 0.1] = 10.0
    paths = write_frames(tmp_path, stack.astype(np.float32))
    extra = {"lthreshold": 100.0} if thresholded else {}
    ref, nrej, log = imcombine_rejected(
        paths,
        tmp_path,
        combine="average",
        reject="avsigclip",
        lsigma=sigma,
        hsigma=sigma,
        mclip=mclip,
        nkeep=nkeep,
        **extra,
    )
    assert "reject = avsigclip" in log
    res = combine(
        paths,
        clip="avsigclip",
        sigma_lower=sigma,
        sigma_upper=sigma,
        mclip=mclip,
        nkeep=nkeep,
        min_clip=100.0 if thresholded else None,
        memory_per_task="1 MiB",
    ).compute()
    np.testing.assert_array_equal(n - res.count, nrej)
    assert nrej.sum() > 0
    np.testing.assert_allclose(res.data, ref, rtol=0, atol=4 * np.spacing(np.float32(1300.0)))


def test_grow_disk_equals_iraf(tmp_path):
    # two isolated cosmic rays in different frames: IRAF's grow rejects the same frame's values
    # within dy² + dx² <= grow² (4 neighbours at 1, the 3 x 3 box at 1.5, 12 at 2, 20 at 2.3)
    from ccdask.combine import grow_offsets

    rng = np.random.default_rng(0)
    stack = (1000.0 + rng.normal(0.0, 1.0, (5, 9, 11))).astype(np.float32)
    stack[2, 4, 5] = 5000.0
    stack[3, 0, 0] = 5000.0
    paths = write_frames(tmp_path, stack)
    for grow, size in ((1.0, 4), (1.5, 8), (2.0, 12), (2.3, 20)):
        assert len(grow_offsets(grow)) == size
        ref, nrej, _ = imcombine_rejected(
            paths, tmp_path / f"g{grow}", combine="average", reject="ccdclip", rdnoise="5", gain="1", grow=grow
        )
        res = combine(paths, clip="ccdclip", rdnoise=5.0, gain=1.0, grow=grow).compute()
        np.testing.assert_array_equal(5 - res.count, nrej)
        assert nrej[4, 5] == 1 and nrej.sum() == 2 * (size + 1) - sum(  # the corner disk is cut by the edges
            1 for dy, dx in grow_offsets(grow) if not (0 <= dy < 9 and 0 <= dx < 11)
        )
        np.testing.assert_allclose(res.data, ref, rtol=0, atol=4 * np.spacing(np.float32(1000.0)))


@pytest.mark.parametrize(
    ("kind", "n", "grow", "nkeep", "extra"),
    [
        ("ccdclip", 5, 1.0, 1, {}),
        ("ccdclip", 5, 1.5, 1, {}),
        ("crreject", 4, 2.0, 1, {}),
        ("crreject", 3, 1.5, 1, {}),
        ("ccdclip", 6, 1.5, 3, {}),
        ("pclip", 7, 1.0, 1, {}),
        ("avsigclip", 8, 1.5, 2, {}),
        ("minmax", 5, 1.0, 1, {"nlow": 0, "nhigh": 1}),
    ],
)
def test_grow_equals_iraf(tmp_path, kind, n, grow, nkeep, extra):
    # 6 % cosmic rays: many grown neighbourhoods overlap, some pixels lose every value. IRAF grows
    # whatever nkeep says; where nothing is left it uses the ungrown value (and its
    # number-rejected mask counts every value there, ccdask's count is the ungrown one)
    rng = np.random.default_rng(n)
    stack = rng.normal(1000.0, 15.0, (n, 20, 24))
    stack[rng.random(stack.shape) < 0.06] += 400.0
    paths = write_frames(tmp_path, stack.astype(np.float32))
    noise = {"rdnoise": "10", "gain": "2"} if kind in ("ccdclip", "crreject") else {}
    ref, nrej, _ = imcombine_rejected(
        paths, tmp_path, combine="average", reject=kind, nkeep=nkeep, grow=grow, **noise, **extra
    )
    options = dict(extra, rdnoise=10.0, gain=2.0) if noise else dict(extra)
    clip = "extrema" if kind == "minmax" else kind
    res = combine(paths, clip=clip, nkeep=nkeep, grow=grow, **options).compute()
    ungrown = combine(paths, clip=clip, nkeep=nkeep, **options).compute()
    assert (res.count < ungrown.count).sum() > 50
    np.testing.assert_allclose(res.data, ref, rtol=0, atol=4 * np.spacing(np.float32(1400.0)))
    emptied = (res.count == ungrown.count) & (nrej == n)  # IRAF's fall-back pixels
    np.testing.assert_array_equal((n - res.count)[~emptied], nrej[~emptied])


def levelled_stack(seed=2):
    """4 frames at different levels and offsets, with EXPTIME and a SKYLEV keyword."""
    rng = np.random.default_rng(seed)
    levels = np.array([1000.0, 1500.0, 800.0, 1200.0])
    stack = rng.normal(1.0, 0.05, (4, 30, 40)) * levels[:, None, None] + 100.0 * np.array([0, 1, 3, 2])[:, None, None]
    stack[:, 10:14, 12:18] += 900.0  # a "star": moves the mean, not the mode
    cards = [
        {"EXPTIME": t, "SKYLEV": k} for t, k in zip((10.0, 20.0, 30.0, 40.0), (5.0, 50.0, 20.0, 80.0), strict=True)
    ]
    return stack.astype(np.float32), cards


@pytest.mark.parametrize(
    ("iraf_params", "ours"),
    [
        (dict(scale="mode"), dict(scale="mode")),
        (dict(scale="mode", statsec="[5:30,3:20]"), dict(scale="mode", statsec="[5:30,3:20]")),
        (dict(scale="mean", statsec="[2:39,16:29]"), dict(scale="mean", statsec="[2:39,16:29]")),
        (dict(zero="mode"), dict(zero="mode")),
        (
            dict(scale="mode", zero="mode", statsec="[5:29,3:21]"),
            dict(scale="mode", zero="mode", statsec="[5:29,3:21]"),
        ),
        (dict(zero="mean", scale="exposure", expname="EXPTIME"), dict(zero="mean", scale="exposure")),
        (dict(scale="!EXPTIME"), dict(scale="!EXPTIME")),
        (dict(zero="!SKYLEV"), dict(zero="!skylev")),
        (dict(scale="!EXPTIME", zero="!SKYLEV"), dict(scale="!EXPTIME", zero="!SKYLEV")),
        (dict(weight="exposure", expname="EXPTIME"), dict(weights="exposure")),
        (dict(weight="!SKYLEV", scale="mode"), dict(weights="!SKYLEV", scale="mode")),
    ],
)
def test_scale_zero_weights_equal_iraf(tmp_path, iraf_params, ours):
    stack, cards = levelled_stack()
    paths = write_frames(tmp_path, stack, cards)
    ref, log = imcombine(paths, tmp_path, combine="average", reject="none", **iraf_params)
    res = combine(paths, clip="none", normalize="first", **ours).compute()
    np.testing.assert_allclose(res.data, ref, rtol=0, atol=8 * np.spacing(np.float32(2000.0)))
    # IRAF prints its factors (3-4 digits): ccdask's agree with them
    table = [line.split() for line in log.splitlines() if "frame0" in line]
    assert len(table) == 4
    if "scale" in ours:
        printed = np.array([float(row[-1 if "zero" not in ours and "weights" not in ours else -2]) for row in table])
        np.testing.assert_allclose(res.scale_factors, printed, atol=6e-4)
    if "zero" in ours:
        printed = np.array([float(row[-1]) for row in table])
        np.testing.assert_allclose(res.zero_offsets, printed, rtol=1e-4, atol=1e-3)
    if "weights" in ours:
        printed = np.array([float(row[-1]) for row in table])
        np.testing.assert_allclose(res.frame_weights / res.frame_weights.sum(), printed, atol=6e-4)
    # the scaling matters: without it the result is not IRAF's
    plain = combine(paths, clip="none").compute()
    assert np.abs(plain.data - ref).max() > 1.0


def test_scale_mode_with_sigclip_equals_iraf(tmp_path):
    stack, cards = levelled_stack(seed=7)
    rng = np.random.default_rng(8)
    stack = np.concatenate([stack, stack[:3] * np.float32(1.1)])
    stack[rng.random(stack.shape) < 0.05] += 3000.0
    paths = write_frames(tmp_path, stack, cards + cards[:3])
    # IRAF corrects the sigmas for the scales above ``sigscale`` (default 0.1); ccdask clips the
    # scaled values as they are, which is IRAF with the correction off (a very large sigscale)
    ref, _ = imcombine(
        paths, tmp_path, combine="average", reject="sigclip", lsigma=2.0, hsigma=2.0, scale="mode", sigscale=1e6
    )
    res = combine(paths, clip="sigclip", sigma_lower=2.0, sigma_upper=2.0, scale="mode", normalize="first").compute()
    assert (res.count < 7).any()
    np.testing.assert_allclose(res.data, ref, rtol=0, atol=8 * np.spacing(np.float32(2000.0)))


def test_iraf_median_statistic_is_the_lower_middle_value(tmp_path):
    # IRAF's median of a frame's statistics sample is its (n // 2)-th smallest value (1-based), not
    # the median: ccdask's median is exact, so zero=median differs from IRAF's by that. With those
    # values as zero levels ccdask equals IRAF.
    stack, cards = levelled_stack()
    paths = write_frames(tmp_path, stack, cards)
    for statsec, (rows, cols) in (
        ("[5:29,3:21]", (slice(2, 21), slice(4, 29))),
        ("[5:30,3:20]", (slice(2, 20), slice(4, 30))),
    ):
        ref, log = imcombine(
            paths, tmp_path / statsec[1:3], combine="average", reject="none", zero="median", statsec=statsec
        )
        printed = np.array([float(line.split()[1]) for line in log.splitlines() if "frame0" in line])
        samples = [np.sort(f[rows, cols].ravel().astype(np.float64)) for f in stack]
        lower = np.array([a[a.size // 2 - 1] for a in samples])
        np.testing.assert_allclose(printed, lower, rtol=6e-5)
        exact = np.array([np.median(a) for a in samples])
        assert np.abs(exact - lower).max() > 0.1  # a real difference
        res = combine(paths, clip="none", zero=lower[0] - lower).compute()
        np.testing.assert_allclose(res.data, ref, rtol=0, atol=8 * np.spacing(np.float32(2000.0)))
        ours = combine(paths, clip="none", zero="median", statsec=statsec, normalize="first").compute()
        np.testing.assert_allclose(ours.zero_offsets, exact[0] - exact, rtol=1e-12)


def test_cli_scale_zero_weights_equal_iraf_and_are_logged(tmp_path):
    import argparse

    from astropy.io import fits

    from ccdask.cli._combine import register, run

    stack, cards = levelled_stack(seed=4)
    paths = write_frames(tmp_path, stack, cards)
    ref, _ = imcombine(
        paths,
        tmp_path,
        combine="average",
        reject="none",
        scale="mode",
        zero="!SKYLEV",
        weight="!EXPTIME",
        statsec="[3:35,2:28]",
    )
    parser = argparse.ArgumentParser(prog="ccdask")
    register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "master.fits"
    argv = ["--reject", "none", "--scale", "mode", "--zero", "!SKYLEV", "--weights", "!EXPTIME"]
    argv += ["--statsec", "[3:35,2:28]", "--normalize", "first"]
    assert run(parser.parse_args(["combine", *map(str, paths), "-o", str(out), *argv])) == 0
    lazy = combine(stack, clip="none", scale="mode", zero=None, statsec="[3:35,2:28]", normalize="first")
    with fits.open(out) as hdul:
        hdr = hdul[0].header
        np.testing.assert_allclose(hdul[0].data, ref, rtol=0, atol=8 * np.spacing(np.float32(2000.0)))
        scales = np.array([hdr[f"CMBSC{i:03d}"] for i in range(1, 5)])
        zeros = np.array([hdr[f"CMBZR{i:03d}"] for i in range(1, 5)])
        weights = np.array([hdr[f"CMBWT{i:03d}"] for i in range(1, 5)])
        assert hdr["CMBSCALE"] == "mode" and hdr["CMBZERO"] == "!SKYLEV" and hdr["CMBSTSEC"] == "[3:35,2:28]"
    # the arrays graph computes the same statistics on the same section
    np.testing.assert_array_equal(scales, lazy.compute().scale_factors)
    np.testing.assert_allclose(zeros, scales * np.array([c["SKYLEV"] for c in cards]), rtol=1e-12)
    np.testing.assert_array_equal(weights, [c["EXPTIME"] for c in cards])
    assert scales[0] == 1.0 and not np.allclose(scales, 1.0)
