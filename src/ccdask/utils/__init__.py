"""Leaf helpers every layer may use: the options system of every configuration, robust
statistics, the canonical hash and atomic writes."""

from ._options import ConfigBase, option
from ._stats import MAD_TO_SIGMA, SAMPLE_PIXELS, sample_step

__all__ = ["MAD_TO_SIGMA", "SAMPLE_PIXELS", "ConfigBase", "option", "sample_step"]
