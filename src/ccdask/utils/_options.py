"""The base of every ccdask configuration: frozen dataclasses, validated, serialisable.

A config class is a ``@dataclass(frozen=True)`` subclass of :class:`ConfigBase` whose fields are
declared with :func:`option`. Each field carries its documentation (the configuration reference
is generated from it); its type is checked on construction, so a ``Literal`` type is the one
spelling of a field's choices. A field may also name a ``parse`` function that normalises the
value first (``"64 MiB"`` to bytes, a list to a tuple of floats) and a ``check`` on the result.
Nested configs are fields whose type is another ConfigBase subclass; a check involving several
fields goes in the class's ``__post_init__``, after ``super().__post_init__()``.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Demo(ConfigBase):
...     method: Literal["mean", "median"] = option("mean", "how to average")
...     sigma: float = option(3.0, "clipping threshold", parse=float, check=lambda v: v > 0)
>>> Demo.from_dict({"sigma": 2}).to_dict()
{'method': 'mean', 'sigma': 2.0}
>>> Demo(method="mode")
Traceback (most recent call last):
...
ccdask.errors.ConfigError: Demo.method = 'mode': choose one of 'mean', 'median'
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Self, get_args, get_origin

from ..errors import ConfigError

__all__ = ["ConfigBase", "option"]


def option(
    default: Any,
    doc: str,
    *,
    check: Callable[[Any], bool] | None = None,
    why: str | None = None,
    parse: Callable[[Any], Any] | None = None,
) -> Any:
    """A documented config field.

    Parameters
    ----------
    default
        The default value (a tuple, not a list: configs are frozen; a nested config instance is
        fine).
    doc
        One line of documentation, shown in ``ccdask config --defaults`` and the reference.
    check
        Returns False for an invalid value (not called for None); ``why`` says why.
    why
        The reason printed when ``check`` fails (default: ``doc``).
    parse
        Called with the given value (None included) before the type and the check: returns the
        value to store, or raises ``ValueError``/``TypeError`` whose message says why the value
        is invalid.
    """
    kwargs: dict[str, Any] = {"metadata": {"doc": doc, "check": check, "why": why, "parse": parse}}
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
        """Parse, type-check and check each field; the first bad one is a :class:`ConfigError`."""
        owner = type(self).__name__
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            parse = f.metadata.get("parse")
            if parse is not None:
                try:
                    parsed = parse(value)
                except (TypeError, ValueError) as exc:
                    raise ConfigError(f"{owner}.{f.name} = {value!r} is invalid: {exc}") from exc
                object.__setattr__(self, f.name, parsed)  # frozen: the parsed form is stored
                value = parsed
            _check_type(owner, f.name, value, hints[f.name])
            check = f.metadata.get("check")
            if check is not None and value is not None and not check(value):
                why = f.metadata.get("why") or f.metadata.get("doc", "")
                raise ConfigError(f"{owner}.{f.name} = {value!r} is invalid: {why}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: nested configs as dicts, tuples as lists."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, ConfigBase):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None = None, *, where: str = "") -> Self:
        """The inverse of :meth:`to_dict`; unknown keys are a :class:`ConfigError`.

        ``where`` prefixes the messages (a file name, the dotted path of a nested config).
        """
        data = dict(data or {})
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"{where}{cls.__name__}: unknown option(s) {sorted(unknown)}; known: {sorted(names)}")
        kwargs = {}
        for name, value in data.items():
            hint = hints[name]
            if _is_config(hint):
                value = hint.from_dict(value, where=f"{where}{name}.")
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            msg = str(exc)
            if where and msg.startswith(f"{cls.__name__}."):
                msg = msg[len(cls.__name__) + 1 :]  # "bias.enabled = ..." rather than "bias.BiasConfig.enabled"
            raise ConfigError(f"{where}{msg}") from exc

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @classmethod
    def describe(cls) -> list[tuple[str, str, Any, str]]:
        """(name, type, default, doc) for each field, nested configs flattened with dots."""
        rows: list[tuple[str, str, Any, str]] = []
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            hint = hints[f.name]
            if _is_config(hint):
                rows.extend((f"{f.name}.{n}", t, d, doc) for n, t, d, doc in hint.describe())
                continue
            default = f.default
            if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            rows.append((f.name, _type_name(hint), default, f.metadata.get("doc", "")))
        return rows


def _is_config(hint: Any) -> bool:
    """A nested config: a ConfigBase subclass."""
    return isinstance(hint, type) and issubclass(hint, ConfigBase)


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
    if _is_config(hint) and not isinstance(value, hint):
        raise ConfigError(f"{owner}.{name}: expected a {hint.__name__}")
