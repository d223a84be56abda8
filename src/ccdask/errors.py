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
    "PlanError",
    "ProfileError",
    "SectionError",
    "ShapeMismatchError",
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


class CcdaskWarning(UserWarning):
    """A condition worth telling the user about that does not stop the work."""
