"""Seeded synthetic nights of a mosaic camera, with the truth they were made from; optionally
written with a real camera's published header cards (:class:`CameraHeaders`)."""

from ._camera import CameraAmp, CameraHeaders, read_header_file
from ._model import Scene
from ._night import SIZES, SimulatedNight, Truth, simulate_night

__all__ = [
    "SIZES",
    "CameraAmp",
    "CameraHeaders",
    "Scene",
    "SimulatedNight",
    "Truth",
    "read_header_file",
    "simulate_night",
]
