"""The options system every config is built on: option(), parse, type and value checks, nesting."""

from __future__ import annotations

import dataclasses
import doctest
from dataclasses import dataclass
from typing import Literal

import pytest

from ccdask.errors import ConfigError
from ccdask.utils import ConfigBase, _options, option

CALLS: list[object] = []


def _to_meters(value: object) -> float:
    """A length in meters from a number or ``"<n> cm"``; a reason when it is neither."""
    CALLS.append(value)
    if value is None:
        return 1.0
    if isinstance(value, str):
        number, _, unit = value.partition(" ")
        if unit != "cm":
            raise ValueError("write centimetres as '<n> cm'")
        return float(number) / 100
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("must be a length")
    return float(value)


@dataclass(frozen=True)
class Inner(ConfigBase):
    """An inner config."""

    mode: Literal["fast", "exact"] = option("exact", "how to do it")
    size: float = option(1.0, "a length in meters", parse=_to_meters, check=lambda v: v > 0, why="must be positive")
    limit: int | None = option(
        None, "at most this many (None: no limit)", check=lambda v: v >= 1, why="must be at least 1"
    )


@dataclass(frozen=True)
class Outer(ConfigBase):
    """An outer config with a nested one."""

    name: str = option("x", "a name")
    labels: tuple[str, ...] = option(("a", "b"), "some labels")
    inner: Inner = option(Inner(), "the inner options")


def test_the_module_examples_run():
    failed, attempted = doctest.testmod(_options)
    assert attempted and not failed


def test_parse_sees_every_value_none_included_and_its_result_is_stored():
    CALLS.clear()
    assert Inner(size="50 cm").size == 0.5
    assert Inner(size=None).size == 1.0
    assert Inner(size=2).size == 2.0 and type(Inner(size=2).size) is float
    assert CALLS[:2] == ["50 cm", None]
    assert Inner(size="50 cm") == Inner(size=0.5)
    assert Inner(size="50 cm").to_dict()["size"] == 0.5


def test_a_parse_failure_is_a_config_error_naming_field_value_and_reason():
    with pytest.raises(ConfigError) as info:
        Inner(size="2 m")
    assert str(info.value) == "Inner.size = '2 m' is invalid: write centimetres as '<n> cm'"
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(ConfigError, match=r"^Inner\.size = True is invalid: must be a length$"):
        Inner(size=True)


def test_the_check_runs_on_the_parsed_value_and_not_on_none():
    with pytest.raises(ConfigError, match=r"^Inner\.size = -0\.5 is invalid: must be positive$"):
        Inner(size="-50 cm")
    assert Inner(limit=None).limit is None
    with pytest.raises(ConfigError, match=r"^Inner\.limit = 0 is invalid: must be at least 1$"):
        Inner(limit=0)


def test_types_are_checked_literals_by_their_choices():
    for mode in ("fast", "exact"):
        assert Inner(mode=mode).mode == mode
    with pytest.raises(ConfigError, match=r"^Inner\.mode = 'slow': choose one of 'fast', 'exact'$"):
        Inner(mode="slow")
    with pytest.raises(ConfigError, match=r"^Inner\.limit = 1\.5: expected an integer$"):
        Inner(limit=1.5)
    with pytest.raises(ConfigError, match=r"^Outer\.inner: expected a Inner$"):
        Outer(inner={"mode": "fast"})


def test_frozen():
    cfg = Inner()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.mode = "fast"


def test_nested_configs_round_trip_and_errors_carry_their_path():
    cfg = Outer(labels=("c",), inner=Inner(mode="fast", size=0.25, limit=3))
    doc = cfg.to_dict()
    assert doc == {"name": "x", "labels": ["c"], "inner": {"mode": "fast", "size": 0.25, "limit": 3}}
    assert Outer.from_dict(doc) == cfg
    assert Outer.from_dict({"inner": {"size": "20 cm"}}).inner.size == 0.2
    with pytest.raises(ConfigError, match=r"^f\.toml: inner\.size = '2 m' is invalid"):
        Outer.from_dict({"inner": {"size": "2 m"}}, where="f.toml: ")
    with pytest.raises(ConfigError, match=r"^inner\.Inner: unknown option\(s\) \['sise'\]"):
        Outer.from_dict({"inner": {"sise": 1}})


def test_describe_flattens_nested_configs_with_their_docs():
    assert Outer.describe() == [
        ("name", "str", "x", "a name"),
        ("labels", "tuple", ("a", "b"), "some labels"),
        ("inner.mode", "'fast' | 'exact'", "exact", "how to do it"),
        ("inner.size", "float", 1.0, "a length in meters"),
        ("inner.limit", "int | None", None, "at most this many (None: no limit)"),
    ]


def test_mutable_defaults_are_refused():
    with pytest.raises(TypeError, match="tuples"):
        option([1, 2], "a list")
