"""The night: plan → masters (bias, dark, flats per filter) → science → products, QA, manifest.

:func:`reduce` reads as the night and calls one function per stage; each stage lives in its
own module (``_plan``, ``_masters``, ``_science``, ``_products``, ``_qa``, ``_manifest``).
"""

from ._plan import ChipPlan, Exposure, Plan, make_plan
from ._reduce import ReduceResult, reduce

__all__ = ["ChipPlan", "Exposure", "Plan", "ReduceResult", "make_plan", "reduce"]
