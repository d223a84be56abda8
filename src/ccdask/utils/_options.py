"""The base of every ccdask configuration: frozen dataclasses, validated, serialisable.

A config class is a ``@dataclass(frozen=True)`` subclass of :class:`ConfigBase`. Each field
carries its documentation in ``metadata={"doc": ...}`` (the configuration reference is
generated from it) and, for choices, a ``Literal`` type that :meth:`ConfigBase.validate` checks.
Nested configs are fields whose type is another ConfigBase subclass.

>>> from dataclasses import dataclass, field
>>> @dataclass(frozen=True)
... class Demo(ConfigBase):
...     method: Literal["mean", "median"] = option("mean", "how to average")
...     sigma: float = option(3.0, "clipping threshold", check=lambda v: v > 0)
>>> Demo.from_dict({"sigma": 2.5}).to_dict()
{'method': 'mean', 'sigma': 2.5}
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, get_args, get_origin

from ..errors import ConfigError

__all__ = ["ConfigBase", "option"]


def option(default: Any, doc: str, *, check: Callable[[Any], bool] | None = None,
           why: str | None = None) -> Any:
    """A documented config field; ``check`` returns False for invalid values (``why`` says why)."""
    kwargs: dict[str, Any] = {"metadata": {"doc": doc, "check": check, "why": why}}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples, not mutable defaults, in frozen configs")
    if dataclasses.is_dataclass(default):
        kwargs["default_factory"] = lambda: default
    else:
        kwargs["default"] = default
    return dataclasses.field(**kwargs)


class ConfigBase:
    """Mixin for frozen dataclass configs: validation, ``to_dict``/``from_dict``, docs."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            _check_type(type(self).__name__, f.name, value, hints[f.name])
            check = f.metadata.get("check")
            if check is not None and value is not None and not check(value):
                why = f.metadata.get("why") or f.metadata.get("doc", "")
                raise ConfigError(f"{type(self).__name__}.{f.name} = {value!r} is invalid: {why}")

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if _is_nested(type(value)):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None, *, where: str = "") -> Any:
        data = dict(data or {})
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - names
        if unknown:
            raise ConfigError(
                f"{where}{cls.__name__}: unknown option(s) {sorted(unknown)}; known: {sorted(names)}"
            )
        kwargs = {}
        for name, value in data.items():
            hint = hints[name]
            if isinstance(hint, type) and issubclass(hint, ConfigBase):
                value = hint.from_dict(value, where=f"{where}{name}.")
            elif _is_nested(hint):
                try:
                    value = hint.from_dict(value or {})
                except ConfigError as exc:
                    raise ConfigError(f"{where}{name}: {exc}") from exc
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            msg = str(exc)
            if where and msg.startswith(f"{cls.__name__}."):
                msg = msg[len(cls.__name__) + 1:]  # "bias.enabled = ..." rather than "bias.BiasConfig.enabled"
            raise ConfigError(f"{where}{msg}") from exc

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @classmethod
    def describe(cls) -> list[tuple[str, str, Any, str]]:
        """(name, type, default, doc) for each field, nested configs flattened with dots."""
        rows = []
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            hint = hints[f.name]
            if isinstance(hint, type) and issubclass(hint, ConfigBase):
                rows.extend((f"{f.name}.{n}", t, d, doc) for n, t, d, doc in hint.describe())
                continue
            if _is_nested(hint):
                docs = _attribute_docs(hint)
                inner = typing.get_type_hints(hint)
                for g in dataclasses.fields(hint):
                    rows.append((f"{f.name}.{g.name}", _type_name(inner[g.name]), g.default,
                                 docs.get(g.name, "")))
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((f.name, _type_name(hint), default, f.metadata.get("doc", "")))
        return rows


def _is_nested(hint: Any) -> bool:
    """A nested config: a dataclass type with ``to_dict``/``from_dict``."""
    return (isinstance(hint, type) and dataclasses.is_dataclass(hint)
            and hasattr(hint, "from_dict") and hasattr(hint, "to_dict"))


def _attribute_docs(cls: type) -> dict[str, str]:
    """Docstrings written under dataclass fields (``x: int = 1`` then ``\"\"\"doc\"\"\"``)."""
    import ast
    import inspect
    import itertools
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, nxt in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _type_name(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return " | ".join(repr(a) for a in get_args(hint))
    return getattr(hint, "__name__", str(hint)).replace("typing.", "")


def _check_type(owner: str, name: str, value: Any, hint: Any) -> None:
    """Light runtime type check: Literal choices, numbers, bools, strings, optionals, tuples."""
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                _check_type(owner, name, value, arg)
                return
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{owner}.{name}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{owner}.{name} = {value!r}: choose one of {', '.join(map(repr, args))}")
        return
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{owner}.{name} = {value!r}: expected a number")
        return
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{owner}.{name} = {value!r}: expected an integer")
        return
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{owner}.{name} = {value!r}: expected true or false")
        return
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{owner}.{name} = {value!r}: expected a string")
        return
    if origin is tuple:
        if not isinstance(value, tuple):
            raise ConfigError(f"{owner}.{name} = {value!r}: expected a list")
        return
    if _is_nested(hint) and not isinstance(value, hint):
        raise ConfigError(f"{owner}.{name}: expected a {hint.__name__}")
