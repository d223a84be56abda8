"""CombineConfig on the options system: Literal choices, parsing, frozen, the to_dict contract."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest

from ccdask.combine import CombineConfig
from ccdask.combine._config import Center, Clip, Method, ScaleMode, Spread
from ccdask.config import load_config
from ccdask.errors import ConfigError
from ccdask.utils import ConfigBase

# What CombineConfig().to_dict() is. It enters every master's cache key: a change here
# invalidates every cached master, so it must be deliberate (and come with a version bump).
DEFAULT_DICT = {
    "method": "mean",
    "clip": "sigma",
    "sigma_lower": 3.0,
    "sigma_upper": 3.0,
    "gesd_fraction": 0.3,
    "gesd_alpha": 0.05,
    "maxiters": 5,
    "center": "median",
    "spread": "mad_std",
    "nlow": 1,
    "nhigh": 1,
    "min_clip": None,
    "max_clip": None,
    "nkeep": 1,
    "mclip": True,
    "rdnoise": 0.0,
    "gain": 1.0,
    "snoise": 0.0,
    "pclip": -0.5,
    "grow": 0.0,
    "scale": None,
    "zero": None,
    "weights": None,
    "statsec": None,
    "normalize": "mean",
    "dq_bad": 1 | 2 | 4 | 8 | 32,
    "nrej_plane": False,
    "rejmask_cube": False,
    "sigma_plane": False,
    "memory_per_task": 64 * 2**20,
}

CHOICE_FIELDS = [("method", Method), ("clip", Clip), ("center", Center), ("spread", Spread), ("scale", ScaleMode)]
CHOICE_IDS = [name for name, _ in CHOICE_FIELDS]


def _needs(name: str, choice: str) -> dict[str, typing.Any]:
    """The other options a valid config with ``name = choice`` needs."""
    return {"max_clip": 1e4} if (name, choice) == ("clip", "minmax") else {}


def test_the_defaults_serialise_exactly_as_the_cache_keys_expect():
    assert CombineConfig().to_dict() == DEFAULT_DICT
    assert list(CombineConfig().to_dict()) == list(DEFAULT_DICT)  # field order too
    assert json.dumps(CombineConfig().to_dict()) == json.dumps(DEFAULT_DICT)


def test_it_is_a_config_of_the_options_system_with_a_doc_per_field():
    assert issubclass(CombineConfig, ConfigBase)
    rows = CombineConfig.describe()
    assert [r[0] for r in rows] == list(DEFAULT_DICT)
    assert all(doc.strip() for _, _, _, doc in rows)
    assert {name: default for name, _, default, _ in rows} == DEFAULT_DICT


@pytest.mark.parametrize(("name", "choices"), CHOICE_FIELDS, ids=CHOICE_IDS)
def test_every_literal_choice_is_accepted(name, choices):
    values = typing.get_args(choices)
    assert values  # a Literal, not a plain str
    for value in values:
        cfg = CombineConfig(**{name: value, **_needs(name, value)})
        assert getattr(cfg, name) == value
        assert cfg.to_dict()[name] == value
        assert CombineConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(("name", "choices"), CHOICE_FIELDS, ids=CHOICE_IDS)
def test_a_wrong_choice_names_the_field_and_every_choice(name, choices):
    listed = ", ".join(repr(v) for v in typing.get_args(choices))
    why = f": choose one of {listed}"
    if name == "scale":  # a choice, a header keyword or numbers
        why = f" is invalid: must be one of {listed}, '!KEYWORD' or one number per frame"
    with pytest.raises(ConfigError) as info:
        CombineConfig(**{name: "nonsense"})
    assert str(info.value) == f"CombineConfig.{name} = 'nonsense'{why}"
    assert isinstance(info.value, ValueError)
    # the same message from a configuration file, with where the option sits
    with pytest.raises(ConfigError) as info:
        load_config({"flat": {"combine": {name: "nonsense"}}})
    assert str(info.value) == f"flat.combine.{name} = 'nonsense'{why}"


def test_the_literal_types_are_the_field_types():
    hints = typing.get_type_hints(CombineConfig)
    for name, choices in CHOICE_FIELDS:
        assert choices == hints[name] or choices in typing.get_args(hints[name]), name


def test_it_is_frozen_and_hashable():
    cfg = CombineConfig(method="median")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.method = "mean"
    assert cfg.method == "median"
    assert hash(cfg) == hash(CombineConfig(method="median"))
    assert len({cfg, CombineConfig(method="median"), CombineConfig()}) == 2


def test_replace_validates_again():
    cfg = CombineConfig(clip="minmax", max_clip=10.0)
    assert cfg.replace(max_clip=20).max_clip == 20.0
    with pytest.raises(ConfigError, match="needs min_clip and/or max_clip"):
        cfg.replace(max_clip=None)


def test_values_are_stored_in_their_parsed_form():
    cfg = CombineConfig(
        sigma_lower=2,
        sigma_upper=4,
        min_clip=-5,
        max_clip=100,
        scale=[1, 2],
        zero=(0, 1),
        weights=[1, 3],
        memory_per_task="2 MiB",
    )
    assert (cfg.sigma_lower, cfg.sigma_upper, cfg.min_clip, cfg.max_clip) == (2.0, 4.0, -5.0, 100.0)
    assert all(type(getattr(cfg, n)) is float for n in ("sigma_lower", "sigma_upper", "min_clip", "max_clip"))
    assert cfg.scale == (1.0, 2.0) and cfg.zero == (0.0, 1.0) and cfg.weights == (1.0, 3.0)
    assert all(type(v) is float for n in ("scale", "zero", "weights") for v in getattr(cfg, n))
    assert cfg.memory_per_task == 2 * 2**20
    assert CombineConfig(memory_per_task=None).memory_per_task == 64 * 2**20
    # an int and the equal float are one configuration, with one serialisation (cache keys)
    assert json.dumps(CombineConfig(sigma_lower=3, sigma_upper=3).to_dict()) == json.dumps(DEFAULT_DICT)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sigma_lower": -1}, "CombineConfig.sigma_lower = -1.0 is invalid: must be >= 0"),
        ({"sigma_upper": float("nan")}, "CombineConfig.sigma_upper = nan is invalid: must not be NaN"),
        ({"sigma_lower": True}, "CombineConfig.sigma_lower = True is invalid: must be a number"),
        ({"maxiters": 0}, "CombineConfig.maxiters = 0 is invalid: must be an integer >= 1"),
        ({"maxiters": 2.5}, "CombineConfig.maxiters = 2.5: expected an integer"),
        ({"nlow": -1}, "CombineConfig.nlow = -1 is invalid: must be an integer >= 0"),
        ({"nkeep": None}, "CombineConfig.nkeep = None: expected an integer"),
        ({"min_clip": "low"}, "CombineConfig.min_clip = 'low' is invalid: must be a number"),
        ({"scale": (1.0, 0.0)}, "CombineConfig.scale = (1.0, 0.0) is invalid: factors must be non-zero"),
        ({"scale": 2.0}, "CombineConfig.scale = 2.0 is invalid: must be a sequence of numbers, one per frame"),
        (
            {"zero": "12"},
            "CombineConfig.zero = '12' is invalid: must be one of 'median', 'mean', 'mode', '!KEYWORD' or one number per frame",
        ),
        (
            {"weights": (1.0, float("inf"))},
            "CombineConfig.weights = (1.0, inf) is invalid: must be finite numbers, got (1.0, inf)",
        ),
        ({"weights": (0.0, 0.0)}, "CombineConfig.weights = (0.0, 0.0) is invalid: must be >= 0 with at least one > 0"),
        ({"memory_per_task": "lots"}, "CombineConfig.memory_per_task = 'lots' is invalid: cannot parse it as a size"),
        (
            {"memory_per_task": 10},
            "CombineConfig.memory_per_task = 10 is invalid: must be at least 1 MiB, not 10 bytes",
        ),
        ({"clip": "minmax"}, "CombineConfig: clip='minmax' needs min_clip and/or max_clip"),
        ({"min_clip": 5, "max_clip": 1}, "CombineConfig: min_clip 5.0 is above max_clip 1.0"),
        (
            {"method": "median", "weights": (1.0,)},
            "CombineConfig: weights apply to method 'mean' or 'sum', not 'median'",
        ),
        (
            {"scale": (1.0, 2.0), "zero": (1.0,)},
            "CombineConfig: per-frame sequences differ in length: {'scale': 2, 'zero': 1}",
        ),
    ],
)
def test_invalid_options_say_which_and_why(options, message):
    with pytest.raises(ConfigError) as info:
        CombineConfig(**options)
    assert str(info.value) == message


def test_to_dict_round_trips_through_load_config():
    configs = [
        CombineConfig(),
        CombineConfig(method="median", clip="extrema", nlow=2, nhigh=0, maxiters=None),
        CombineConfig(clip="minmax", min_clip=-5, max_clip=1.5e4, center="mean", spread="std"),
        CombineConfig(
            scale=(1.0, 0.5, 2.0),
            zero=(0.0, 1.0, -1.0),
            weights=(1.0, 2.0, 0.0),
            method="sum",
            memory_per_task="8 MiB",
            nkeep=0,
        ),
        CombineConfig(scale="exposure", sigma_lower=2.5, sigma_upper=4),
    ]
    for cfg in configs:
        doc = json.loads(json.dumps(cfg.to_dict()))  # what a manifest holds
        for kind in ("bias", "dark", "flat"):
            loaded = getattr(load_config({kind: {"combine": doc}}), kind).combine
            assert loaded == cfg
            assert json.dumps(loaded.to_dict()) == json.dumps(cfg.to_dict())
        full = load_config({"bias": {"combine": doc}})
        assert load_config(full.to_dict()) == full


def test_to_dict_round_trips_through_a_toml_file(tmp_path):
    cfg = CombineConfig(
        method="median", clip="extrema", nlow=2, scale=(1.0, 2.0), zero=(0.0, 1.0), memory_per_task="16 MiB", maxiters=3
    )

    def toml(value: typing.Any) -> str:
        if isinstance(value, list):
            return "[" + ", ".join(map(toml, value)) + "]"
        return json.dumps(value)  # strings, ints and floats are written alike in TOML

    lines = ["[dark.combine]"] + [
        f"{k} = {toml(v)}" for k, v in cfg.to_dict().items() if v is not None
    ]  # TOML has no null: unset is the default
    path = tmp_path / "night.toml"
    path.write_text("\n".join(lines) + "\n")
    assert load_config(path).dark.combine == cfg


def test_configuration_file_errors_name_the_section():
    with pytest.raises(ConfigError, match=r"^dark\.combine\.CombineConfig: clip='minmax' needs"):
        load_config({"dark": {"combine": {"clip": "minmax"}}})
    with pytest.raises(ConfigError, match=r"^bias\.combine\.sigma_lower = -1\.0 is invalid"):
        load_config({"bias": {"combine": {"sigma_lower": -1}}})
    with pytest.raises(ConfigError, match=r"^bias\.combine\.CombineConfig: unknown option.*'methd'"):
        load_config({"bias": {"combine": {"methd": "mean"}}})


def test_iraf_rejection_options():
    import numpy as np

    from ccdask.combine import combine_block, pclip_offset

    cfg = CombineConfig(clip="ccdclip", rdnoise=" rdnoise ", gain="2.5", snoise=0)
    assert (cfg.rdnoise, cfg.gain, cfg.snoise) == ("RDNOISE", 2.5, 0.0)
    assert CombineConfig(clip="pclip", nkeep=-2).nkeep == -2
    assert CombineConfig.from_dict(cfg.to_dict()) == cfg
    for bad in (dict(gain=0), dict(rdnoise=-1.0), dict(snoise=""), dict(pclip=0), dict(rdnoise=float("inf"))):
        with pytest.raises(ConfigError):
            CombineConfig(clip="ccdclip", **bad)
    with pytest.raises(ConfigError, match="not supported"):
        CombineConfig(clip="crreject", scale=(1.0, 2.0))
    block = np.ones((4, 2, 2), np.float32)
    with pytest.raises(ConfigError, match="header keywords"):
        combine_block(block, cfg)
    assert combine_block(block, cfg, noise=(3.0, 2.5, 0.0)).count.min() == 4
    # IRAF's log for these: pclip = -2. (10 frames, -0.5), 3. (9 frames, 0.8), -1. (12 frames, -0.3)
    assert (pclip_offset(10, -0.5), pclip_offset(9, 0.8), pclip_offset(12, -0.3)) == (-2, 3, -1)
    assert pclip_offset(5, -7.0) == -2  # clamped to the pixels below the median
