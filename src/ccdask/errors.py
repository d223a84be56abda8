"""One error hierarchy for ccdask.

Every exception ccdask raises on purpose derives from :class:`CcdaskError`, and also from the
built-in exception that best describes it, so ``except ValueError`` keeps working for callers
who do not know about ccdask. Messages name the file, the extension and what is wrong.
"""

from __future__ import annotations

__all__ = [
    "CacheError",
    "CcdaskError",
    "CcdaskWarning",
    "ConfigError",
    "FitsReadError",
    "IdentityError",
    "PlanError",
    "ProfileError",
    "SectionError",
    "ShapeMismatchError",
    "TruncatedFileError",
    "WcsError",
    "where",
]


def where(path: object = None, hdu: object = None) -> str:
    """Format a location such as ``'raw/a.fits[2]: '`` for error messages ('' if unknown)."""
    if path is None:
        return ""
    if hdu is None:
        return f"{path}: "
    return f"{path}[{hdu}]: "


class CcdaskError(Exception):
    """Base class of every error raised by ccdask."""


class SectionError(CcdaskError, ValueError):
    """A FITS section string is malformed or does not fit the image it describes."""


class FitsReadError(CcdaskError, OSError):
    """A file cannot be read as FITS image data (missing, truncated, not FITS, no image)."""


class TruncatedFileError(FitsReadError):
    """A FITS file ends inside one of its HDUs: inside a header, or before the data it declares.

    The message names the file and HDU (``path[index]: truncated file: ...``), the HDU's EXTNAME
    when it could be read, the byte where the file ends and the byte where the HDU should end.

    Attributes
    ----------
    path : str
        The file.
    hdu : int
        Index of the HDU the file ends in (0 is the primary HDU).
    extname : str or None
        Its ``EXTNAME``, when the part of the header present holds one.
    ends_at : int
        Where the bytes end: the file size for a plain file, the length of the decompressed
        stream for a gzip-wrapped one.
    should_end : int
        Where the HDU should end (its data padded to whole 2880-byte blocks); for a header cut
        before its END card, the least it could be (the end of the block it was cut in).
    """

    # Keyword defaults let pickle rebuild the error from its message (then restore the fields).
    def __init__(
        self,
        message: str,
        *,
        path: str = "",
        hdu: int = 0,
        extname: str | None = None,
        ends_at: int = 0,
        should_end: int = 0,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.hdu = hdu
        self.extname = extname
        self.ends_at = ends_at
        self.should_end = should_end


class ShapeMismatchError(CcdaskError, ValueError):
    """Frames that must share a shape do not."""


class ProfileError(CcdaskError, ValueError):
    """An instrument profile is invalid or does not describe a frame."""


class ConfigError(CcdaskError, ValueError):
    """A configuration value is invalid."""


class PlanError(CcdaskError, ValueError):
    """A reduction plan cannot be satisfied (missing master, keyword, mismatched shapes)."""


class CacheError(CcdaskError, RuntimeError):
    """The master cache is unusable."""


class IdentityError(CcdaskError, ValueError):
    """A value has no canonical form to hash: it cannot be part of an identity (cache key,
    master identity, CCDKEY) without risking two different things hashing alike."""


class WcsError(CcdaskError, ValueError):
    """A frame has no usable world coordinate system (missing, not celestial, singular)."""


class CcdaskWarning(UserWarning):
    """A condition worth telling the user about that does not stop the work."""
