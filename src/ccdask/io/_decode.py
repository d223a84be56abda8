"""Raw FITS pixel values to float32 physical values.

``physical = raw * BSCALE + BZERO``, with ``BLANK`` pixels of integer images set to NaN. The
arithmetic reproduces what astropy does, so that results are bit-identical to
``astropy.io.fits.getdata(...).astype(numpy.float32)``:

* pseudo-unsigned integers (``BSCALE = 1``, ``BZERO = 2**(BITPIX-1)``, or ``-128`` for bytes)
  are exact integers, rounded once to float32;
* 8- and 16-bit integers with other scaling are scaled in float32 arithmetic (astropy makes a
  float32 array and multiplies/adds in place), which is also exact for unscaled data;
* 32- and 64-bit integers are scaled in float64 and rounded once to float32;
* floating-point data are scaled in their own precision (as astropy does) then cast.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RAW_DTYPES", "exact_integers", "integer_dtype", "physical", "physical_into"]

RAW_DTYPES: dict[int, np.dtype] = {
    8: np.dtype("u1"),
    16: np.dtype(">i2"),
    32: np.dtype(">i4"),
    64: np.dtype(">i8"),
    -32: np.dtype(">f4"),
    -64: np.dtype(">f8"),
}
_UNSIGNED = {32: np.dtype(">u4"), 64: np.dtype(">u8")}


def _unsigned_offset(bitpix: int) -> int:
    return -128 if bitpix == 8 else 1 << (bitpix - 1)


def _blank_mask(raw: np.ndarray, blank: int | None) -> np.ndarray | None:
    if blank is None:
        return None
    info = np.iinfo(raw.dtype)
    if not info.min <= blank <= info.max:
        return None
    mask = raw == blank
    return mask if mask.any() else None


def physical(raw: np.ndarray, bitpix: int, bscale: float, bzero: float, blank: int | None) -> np.ndarray:
    """Convert raw stored values (any byte order, any strides) to a new float32 array.

    Parameters
    ----------
    raw : numpy.ndarray
        Stored values as the file holds them (e.g. a view of a memory map); not modified.
    bitpix : int
        The stored ``BITPIX``: 8, 16, 32, 64, -32 or -64.
    bscale, bzero : float
        Linear scaling, ``physical = raw * bscale + bzero``.
    blank : int or None
        Stored value marking undefined pixels of integer images (set to NaN).

    Returns
    -------
    numpy.ndarray
        Native float32 array of ``raw.shape``, never a view of ``raw``.
    """
    bscale = float(bscale)
    bzero = float(bzero)
    if bitpix < 0:
        if bscale == 1 and bzero == 0:
            return raw.astype(np.float32)
        work = raw.astype(np.float32 if bitpix == -32 else np.float64)
        if bscale != 1:
            np.multiply(work, bscale, out=work)
        if bzero != 0:
            np.add(work, bzero, out=work)
        return work if work.dtype == np.float32 else work.astype(np.float32)

    mask = _blank_mask(raw, blank)
    if bscale == 1 and bzero == _unsigned_offset(bitpix):
        if bitpix <= 16:
            out = raw.astype(np.float32)
            np.add(out, bzero, out=out)  # exact: |values| < 2**24
        else:
            sign = np.array(1 << (bitpix - 1), dtype=_UNSIGNED[bitpix])
            out = np.bitwise_xor(raw.view(_UNSIGNED[bitpix]), sign).astype(np.float32)
    elif bscale == 1 and bzero == 0:
        out = raw.astype(np.float32)
    elif bitpix <= 16:
        out = raw.astype(np.float32)
        if bscale != 1:
            np.multiply(out, bscale, out=out)
        if bzero != 0:
            np.add(out, bzero, out=out)
    else:
        work = raw.astype(np.float64)
        if bscale != 1:
            np.multiply(work, bscale, out=work)
        if bzero != 0:
            np.add(work, bzero, out=work)
        out = work.astype(np.float32)
    if mask is not None:
        out[mask] = np.nan
    return out


def physical_into(
    raw: np.ndarray, out: np.ndarray, bitpix: int, bscale: float, bzero: float, blank: int | None
) -> None:
    """:func:`physical` written into ``out`` (float32, ``raw.shape``, may be a strided view).

    The same values bit for bit: 8/16-bit integers (any scaling) and 32-bit floats are converted
    straight into ``out`` (one cast from the stored byte order, then the scaling in float32 in
    place, as :func:`physical` does), with no intermediate array; the other types, which
    :func:`physical` scales in float64 or as unsigned integers, go through it and are copied.
    """
    if out.dtype != np.float32 or out.shape != raw.shape:
        raise ValueError(f"out must be float32 of shape {raw.shape}, got {out.dtype} {out.shape}")
    bscale = float(bscale)
    bzero = float(bzero)
    if not (bitpix in (8, 16, -32) or (bscale == 1 and bzero == 0 and bitpix != 64)):
        out[...] = physical(raw, bitpix, bscale, bzero, blank)
        return
    np.copyto(out, raw, casting="unsafe")
    if bscale != 1:
        np.multiply(out, bscale, out=out)
    if bzero != 0:
        np.add(out, bzero, out=out)
    if bitpix > 0:
        mask = _blank_mask(raw, blank)
        if mask is not None:
            out[mask] = np.nan


def integer_dtype(bitpix: int, bscale: float, bzero: float) -> np.dtype | None:
    """The numpy type that holds an image's physical values exactly when they are integers
    (integer BITPIX, BSCALE 1, integral BZERO: bit masks, DQ planes), else None."""
    bscale, bzero = float(bscale), float(bzero)
    if bitpix < 0 or bscale != 1 or bzero != int(bzero):
        return None
    if bitpix == 8:
        return np.dtype(np.uint8) if bzero == 0 else np.dtype(np.int16)
    if bitpix == 16:
        return np.dtype(np.uint16) if bzero == 1 << 15 else np.dtype(np.int32)
    if bitpix == 32:
        return np.dtype(np.uint32) if bzero == 1 << 31 else np.dtype(np.int64)
    return np.dtype(np.int64)


def exact_integers(values: np.ndarray, bitpix: int, bscale: float, bzero: float, *, stored: bool) -> np.ndarray:
    """Physical values of an exact-integer image as a new native array of :func:`integer_dtype`:
    ``stored`` values get BZERO added (in int64, then narrowed), already physical values (as
    astropy returns them for tile-compressed HDUs) are only cast."""
    dtype = integer_dtype(bitpix, bscale, bzero)
    if dtype is None:
        raise ValueError(f"BITPIX {bitpix}, BSCALE {bscale}, BZERO {bzero}: not an integer image")
    if not stored:
        return np.asarray(values).astype(dtype)
    return (np.asarray(values).astype(np.int64) + int(float(bzero))).astype(dtype)
