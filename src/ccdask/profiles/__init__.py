"""Instrument profiles: how to read a camera's headers.

A profile is a TOML file naming the header keywords that carry the image type, exposure time,
filter, date and chip name; the vocabulary and rules that turn header values into a normalised
image type (``bias``, ``dark``, ``flat``, ``science`` or ``other``); and the amplifier layout,
read from header keyword families or written out per amplifier, and placed by one resolver
(:mod:`ccdask.profiles._resolve`; rules in ``docs/profiles.md``). The profiles that ship with
ccdask live beside this module; ``load_profile`` also accepts a path to your own file.
"""

from ._layout import Amplifier, ChipLayout, OverscanAxis, OverscanOrder
from ._profile import IMAGE_TYPES, Classification, Profile, available_profiles, load_profile

__all__ = [
    "IMAGE_TYPES",
    "Amplifier",
    "ChipLayout",
    "Classification",
    "OverscanAxis",
    "OverscanOrder",
    "Profile",
    "available_profiles",
    "load_profile",
]
