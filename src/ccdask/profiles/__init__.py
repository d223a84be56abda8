"""Instrument profiles: how to read a camera's headers.

A profile is a TOML file naming the header keywords that carry the image type, exposure time,
filter, date and chip name; the vocabulary and rules that turn header values into a normalised
image type (``bias``, ``dark``, ``flat``, ``science`` or ``other``); and the amplifier layout,
either read from standard keywords (``generic``) or written out per amplifier. The profiles that
ship with ccdask live beside this module; ``load_profile`` also accepts a path to your own file.
"""

from ._layout import Amplifier, ChipLayout, OverscanAxis
from ._profile import IMAGE_TYPES, Classification, Profile, available_profiles, load_profile

__all__ = ["IMAGE_TYPES", "Amplifier", "ChipLayout", "Classification", "OverscanAxis", "Profile",
           "available_profiles", "load_profile"]
