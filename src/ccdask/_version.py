"""The version of ccdask (one place; the package root and every writer read it from here)."""

__version__ = "0.1.0"
