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

from ._config_base import ConfigBase, option
from ._master_config import BiasConfig, DarkConfig, FlatConfig
from .calibrate import OverscanConfig
from .cosmics import CosmicConfig
from .errors import ConfigError
from .masks import MaskConfig

__all__ = ["BiasConfig", "CosmicConfig", "DarkConfig", "FlatConfig", "MaskConfig", "OutputConfig",
           "OverscanConfig", "ReduceConfig", "defaults_toml", "load_config"]


@dataclass(frozen=True)
class OutputConfig(ConfigBase):
    """What a reduction writes besides the reduced frames."""

    masters_fits: bool = option(True, "write the masters as FITS under OUT/masters")
    qa: bool = option(True, "write the QA table and PNG pictures under OUT/qa")
    qa_max_pixels: int = option(
        1024, "longest side of the binned QA pictures, in pixels",
        check=lambda v: v >= 64, why="must be at least 64")
    skip_existing: bool = option(
        True, "skip reduced frames already written with the same inputs, masters and parameters")


@dataclass(frozen=True)
class ReduceConfig(ConfigBase):
    """Every parameter of a night's reduction."""

    profile: str | None = option(
        None, "instrument profile name or TOML path for every file (None: detect per file)")
    chunk_mb: float = option(
        32.0, "target size of the pixel chunks of one frame, in MiB",
        check=lambda v: 0.25 <= v <= 4096, why="must lie between 0.25 and 4096")
    read_noise: Literal["header", "overscan"] = option(
        "header", "where the read noise comes from: the header/profile, or measured in the overscan")
    overscan: OverscanConfig = option(OverscanConfig(), "overscan per amplifier")
    bias: BiasConfig = option(BiasConfig(), "bias master")
    dark: DarkConfig = option(DarkConfig(), "dark master")
    flat: FlatConfig = option(FlatConfig(), "flat masters per filter")
    masks: MaskConfig = option(MaskConfig(), "bad pixels, saturation, interpolation")
    cosmics: CosmicConfig = option(CosmicConfig(), "cosmic rays in science frames")
    output: OutputConfig = option(OutputConfig(), "outputs besides the reduced frames")

    def chunks_for(self, shape: tuple[int, int]) -> tuple[int, int]:
        """Chunks of a chip of ``shape``: whole rows, about ``chunk_mb`` MiB of float32 each."""
        ny, nx = shape
        rows = max(1, int(self.chunk_mb * 2**20 // (4 * max(nx, 1))))
        return (min(rows, ny), nx)


def load_config(source: str | os.PathLike | dict[str, Any] | ReduceConfig | None = None) -> ReduceConfig:
    """A :class:`ReduceConfig` from a TOML file, a dict, an existing config, or the defaults."""
    if source is None:
        return ReduceConfig()
    if isinstance(source, ReduceConfig):
        return source
    if isinstance(source, dict):
        return ReduceConfig.from_dict(source)
    path = Path(source)
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return ReduceConfig.from_dict(doc, where=f"{path}: ")


def defaults_toml() -> str:
    """The documented defaults as a TOML file (what ``ccdask config --defaults`` prints)."""
    lines = ["# ccdask reduction configuration: every option with its default.",
             "# Copy, keep what you change, and pass it with --config.", ""]
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
