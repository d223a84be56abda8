"""The reliability tests share one small night and its clean reduction (built once per run)."""

from .support import night, reference

__all__ = ["night", "reference"]
