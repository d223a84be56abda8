"""Leaf helpers every layer may use: the options system of every configuration, robust
statistics, the canonical hash and atomic writes."""

from ._options import ConfigBase, option

__all__ = ["ConfigBase", "option"]
