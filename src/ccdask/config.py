"""The configuration of a reduction: one frozen, validated object per step, one TOML file.

``ccdask config --defaults`` prints every option with its default and documentation; a TOML
file given with ``--config`` overrides any of them, e.g.::

    profile = "wht_isis_red"
    [overscan]
    method = "median"
    skip_start = 3
    [flat]
    enabled = false
    [bias.combine]
    method = "median"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .calibrate import CosmicConfig, MaskConfig, OverscanConfig, ProcessConfig
from .calibrate._crosstalk import CrosstalkConfig
from .calibrate._fringe import FringeConfig
from .calibrate._linearity import LinearityConfig
from .combine import CombineConfig
from .errors import ConfigError
from .utils import ConfigBase, option

__all__ = [
    "BiasConfig",
    "CosmicConfig",
    "DarkConfig",
    "FlatConfig",
    "FringeConfig",
    "MaskConfig",
    "OutputConfig",
    "OverscanConfig",
    "ReduceConfig",
    "defaults_toml",
    "load_config",
]


@dataclass(frozen=True)
class BiasConfig(ConfigBase):
    """The bias master: overscan-corrected, trimmed, gain-applied biases, clipped and averaged.

    What the master holds is the residual 2-D structure the overscan cannot follow, in electrons.
    """

    enabled: bool = option(True, "build a bias master per chip and subtract it from every other frame")
    combine: CombineConfig = option(
        CombineConfig(method="mean", clip="sigma", sigma_lower=3.0, sigma_upper=3.0, maxiters=5),
        "how the biases are stacked (default: sigma-clipped mean)",
    )


@dataclass(frozen=True)
class DarkConfig(ConfigBase):
    """The dark master: a dark-current rate (e-/s) from bias-subtracted darks ÷ exposure time."""

    mode: Literal["scale", "nearest", "none"] = option(
        "scale",
        "scale: one rate master from all darks, times each frame's exposure time; nearest: the "
        "rate master of the darks whose exposure time is closest to the frame's (within "
        "`tolerance` for science frames; flats take the nearest, scaled), as the CCD reduction "
        "guide does; none: no dark correction",
    )
    tolerance: float = option(
        1.0,
        "nearest mode: largest allowed |dark exptime - frame exptime| in seconds",
        check=lambda v: v >= 0,
        why="must be zero or positive",
    )
    required: bool = option(
        False,
        "fail the plan when there are no darks (by default dark correction is then skipped)",
    )
    combine: CombineConfig = option(
        CombineConfig(method="mean", clip="sigma", sigma_lower=3.0, sigma_upper=3.0, maxiters=5),
        "how the dark rates are stacked",
    )


@dataclass(frozen=True)
class FlatConfig(ConfigBase):
    """Flat masters per filter, normalised over the whole focal plane.

    Each flat exposure (bias- and dark-corrected) is divided by one statistic — the median of a
    region of every chip, pooled over the focal plane — so chip-to-chip sensitivity survives;
    the normalised exposures are combined per chip, and the master is divided by the median of
    the same region pooled over all chips, so the focal plane has a median response of 1.
    """

    enabled: bool = option(True, "divide science frames by the flat master of their filter")
    region: str = option(
        "[*,*]",
        "FITS section of each trimmed chip used for the normalising medians (e.g. "
        "'[100:900,100:900]' to avoid vignetted edges); the medians are taken on a fixed grid of "
        "at most 2**18 pixels per chip (every s-th row and column), exact and chunk independent",
    )
    min_value: float = option(
        0.1,
        "flat values below this are replaced by it when dividing, and their pixels flagged bad",
        check=lambda v: v > 0,
        why="must be positive",
    )
    combine: CombineConfig = option(
        CombineConfig(method="mean", clip="sigma", sigma_lower=3.0, sigma_upper=3.0, maxiters=5),
        "how the normalised flats are stacked",
    )
    illumination: bool = option(
        False,
        "when a filter has both dome and twilight/sky flats (see `twilight_labels`), keep the dome "
        "master's pixel-to-pixel structure and take its large-scale shape from the twilight "
        "master: flat = dome x L(twilight / dome), L a least-squares 2-D Legendre polynomial "
        "fitted over the focal plane (DETSEC coordinates; per chip when a chip has no DETSEC), "
        "then renormalised to a focal-plane median of 1. Off: every flat of a filter, dome or "
        "twilight, is stacked into one master",
    )
    illumination_order: int = option(
        2,
        "illumination: total degree of the 2-D Legendre polynomial (terms P_i(x) P_j(y), i + j <= order)",
        check=lambda v: isinstance(v, int) and 0 <= v <= 10,
        why="must be an integer from 0 to 10",
    )
    illumination_sigma: float = option(
        3.0,
        "illumination: sample pixels whose residual exceeds this many sigma (MAD-based) are "
        "left out of the fit, iterated",
        check=lambda v: v > 0,
        why="must be positive",
    )
    illumination_maxiters: int = option(
        5,
        "illumination: at most this many clip-and-refit iterations (stops earlier when nothing changes)",
        check=lambda v: isinstance(v, int) and v >= 0,
        why="must be a non-negative integer",
    )
    twilight_labels: tuple[str, ...] = option(
        ("skyflat", "twilight", "twiflat", "twilightflat"),
        "catalogue labels of the flats that count as twilight/sky flats for `illumination` "
        "(the generic profile labels a flat by its normalised IMAGETYP value, e.g. 'skyflat', "
        "'domeflat', 'flat'; profile rules may set their own labels). Compared case-insensitively "
        "with spaces, dashes and underscores removed",
    )


@dataclass(frozen=True)
class OutputConfig(ConfigBase):
    """What a reduction writes besides the reduced frames."""

    masters_fits: bool = option(True, "write the masters as FITS under OUT/masters")
    qa: bool = option(True, "write the QA table and PNG pictures under OUT/qa")
    qa_max_pixels: int = option(
        1024, "longest side of the binned QA pictures, in pixels", check=lambda v: v >= 64, why="must be at least 64"
    )
    skip_existing: bool = option(
        True, "skip reduced frames already written with the same inputs, masters and parameters"
    )


@dataclass(frozen=True)
class ReduceConfig(ConfigBase):
    """Every parameter of a night's reduction."""

    profile: str | None = option(None, "instrument profile name or TOML path for every file (None: detect per file)")
    chunk_mb: float = option(
        32.0,
        "target size of the pixel chunks of one frame, in MiB",
        check=lambda v: 0.25 <= v <= 4096,
        why="must lie between 0.25 and 4096",
    )
    read_noise: Literal["auto", "header", "overscan"] = option(
        "auto",
        "where the read noise comes from: 'header' (the header or profile), 'overscan' "
        "(measured in each frame's overscan), or 'auto': the header where it has one, else "
        "measured in the overscans of the night's biases (else in each frame's overscan)",
    )
    crosstalk: CrosstalkConfig = option(CrosstalkConfig(), "crosstalk between the amplifiers of a chip (raw ADU)")
    overscan: OverscanConfig = option(OverscanConfig(), "overscan per amplifier")
    linearity: LinearityConfig = option(LinearityConfig(), "nonlinearity per amplifier (ADU, after the overscan)")
    bias: BiasConfig = option(BiasConfig(), "bias master")
    dark: DarkConfig = option(DarkConfig(), "dark master")
    flat: FlatConfig = option(FlatConfig(), "flat masters per filter")
    fringe: FringeConfig = option(FringeConfig(), "fringe frames per filter and chip, scaled and subtracted")
    masks: MaskConfig = option(MaskConfig(), "bad pixels, saturation, interpolation")
    cosmics: CosmicConfig = option(CosmicConfig(), "cosmic rays in science frames")
    output: OutputConfig = option(OutputConfig(), "outputs besides the reduced frames")

    def process_config(self) -> ProcessConfig:
        """The parameters of the per-chip chain (:func:`ccdask.process`) in this configuration."""
        return ProcessConfig(
            chunk_mb=self.chunk_mb,
            # auto: the night measured what it could in the biases' overscans (night._read_noise);
            # an amplifier still without one is measured in each frame's own overscan
            read_noise=self.read_noise,
            crosstalk=self.crosstalk,
            overscan=self.overscan,
            linearity=self.linearity,
            masks=self.masks,
            cosmics=self.cosmics,
            flat_min_value=self.flat.min_value,
        )

    def chunks_for(self, shape: tuple[int, int]) -> tuple[int, int]:
        """Chunks of a chip of ``shape``: whole rows, about ``chunk_mb`` MiB of float32 each."""
        return self.process_config().chunks_for(shape)


def load_config(source: str | os.PathLike | dict[str, Any] | ReduceConfig | None = None) -> ReduceConfig:
    """A :class:`ReduceConfig` from a TOML file, a dict, an existing config, or the defaults.

    A file, a dict and the defaults sit on top of the ``ccdask.reduce`` table of dask's
    configuration when there is one (:mod:`ccdask.utils._daskconfig`): the file wins, then dask's
    configuration, then the built-in defaults. An existing config is returned unchanged.
    """
    if isinstance(source, ReduceConfig):
        return source
    from .utils._daskconfig import dask_defaults, merge

    base = dask_defaults("reduce")
    if source is None:
        return ReduceConfig.from_dict(base, where="dask configuration ccdask.reduce: ") if base else ReduceConfig()
    if isinstance(source, dict):
        return ReduceConfig.from_dict(merge(base, source))
    path = Path(source)
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    where = f"{path} (over dask configuration ccdask.reduce): " if base else f"{path}: "
    return ReduceConfig.from_dict(merge(base, doc), where=where)


def defaults_toml() -> str:
    """The documented defaults as a TOML file (what ``ccdask config --defaults`` prints)."""
    lines = [
        "# ccdask reduction configuration: every option with its default.",
        "# Copy, keep what you change, and pass it with --config.",
        "",
    ]
    sections: dict[str, list[tuple[str, str, Any, str]]] = {"": []}
    for name, typ, default, doc in ReduceConfig.describe():
        head, _, leaf = name.rpartition(".")
        sections.setdefault(head, []).append((leaf, typ, default, doc))
    for head, rows in sections.items():
        if head:
            lines.append(f"[{head}]")
        for leaf, typ, default, doc in rows:
            lines.append(f"# {doc} ({typ})")
            lines.append(f"{'# ' if default is None else ''}{leaf} = {_toml_value(default)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if value is None:
        return '"" # unset'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
