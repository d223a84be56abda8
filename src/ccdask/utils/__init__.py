"""Leaf helpers every layer may use: the options system of every configuration, robust
statistics, the canonical hash and atomic writes."""

from ._atomic import TMP_PREFIX, atomic_path, atomic_write_text, check_output, temporary_beside
from ._hash import canonical_hash, canonical_json, normalise
from ._options import ConfigBase, option
from ._stats import MAD_TO_SIGMA, SAMPLE_PIXELS, sample_step

__all__ = [
    "MAD_TO_SIGMA",
    "SAMPLE_PIXELS",
    "TMP_PREFIX",
    "ConfigBase",
    "atomic_path",
    "atomic_write_text",
    "canonical_hash",
    "canonical_json",
    "check_output",
    "normalise",
    "option",
    "sample_step",
    "temporary_beside",
]
