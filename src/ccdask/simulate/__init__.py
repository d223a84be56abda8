"""Seeded synthetic nights of a mosaic camera, with the truth they were made from."""

from ._night import SIZES, SimulatedNight, Truth, simulate_night

__all__ = ["SIZES", "SimulatedNight", "Truth", "simulate_night"]
