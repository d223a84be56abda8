"""Seeded synthetic nights of a mosaic camera, with the truth they were made from; optionally
written with a real camera's published header cards (:class:`CameraHeaders`)."""

from ._camera import CameraAmp, CameraHeaders, read_header_file
from ._field import SimulatedField, simulate_field
from ._model import Scene
from ._night import SIZES, SimulatedNight, Truth, simulate_night

__all__ = [
    "SIZES",
    "CameraAmp",
    "CameraHeaders",
    "Scene",
    "SimulatedField",
    "SimulatedNight",
    "Truth",
    "read_header_file",
    "simulate_field",
    "simulate_night",
]
