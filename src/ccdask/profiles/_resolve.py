"""The layout resolver: one raw chip's amplifiers from its header and its instrument profile.

Every profile's ``[layout]`` table is parsed once into a :class:`LayoutSpec`; :func:`resolve`
turns a header into a :class:`~ccdask.profiles.ChipLayout` in two steps:

1. **collect** each amplifier's raw facts: its data section, trim section, serial and parallel
   overscans, its placement sections (CCDSEC[n], DETSEC[n]) and its gain, read noise and
   saturation, each with the keyword (or profile entry) it came from. Where they come from is
   data: keyword *families* in the profile TOML (``[layout.keywords]``, ``[layout.ports]``),
   amplifier name suffixes (``A``..``H``, ``1``..``16``, ``11``..``44``), or amplifiers written
   out in the profile (``source = "profile"``);
2. **place** them with one set of rules, whatever the family: CCDSEC[n], else DETSEC[n]
   (relative to the chip's), else the data sections packed in raw order; flips from the
   direction of the placement section against the data section's; binning (CCDSUM) when the
   placement sections count unbinned pixels; trim sections cropped out of the placement; and
   cross-checks of the assembled shape against CCDSEC, DETSEC and DATASEC.

:func:`resolve_explained` returns the same layout with a :class:`LayoutExplanation`: the rule
used and why, and for every amplifier the :class:`Origin` of each fact (``ccdask inspect``).

The rules and their order are documented in ``docs/profiles.md``. Errors are
:class:`~ccdask.errors.ProfileError` naming the keywords and values involved; the caller adds
the file and extension.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

from astropy.io import fits

from ..errors import ProfileError, SectionError
from ..sections import Range, Section
from ._layout import Amplifier, ChipLayout

__all__ = [
    "AmpExplanation",
    "LayoutExplanation",
    "LayoutSpec",
    "Origin",
    "parse_layout",
    "resolve",
    "resolve_explained",
]

SECTION_FIELDS = ("datasec", "trimsec", "biassec", "parallel_biassec", "ccdsec", "detsec")
NUMBER_FIELDS = ("gain", "rdnoise", "saturate")
KEYWORD_FIELDS = (*SECTION_FIELDS, *NUMBER_FIELDS, "binning")
PORT_FIELDS = ("count", "nx", "ny", "prscx", "prscy", "ovscx", "ovscy", "x", "y", "gain", "rdnoise", "saturate")
AMP_KEYS = (
    "name",
    "datasec",
    "biassec",
    "parallel_biassec",
    "ccdsec",
    "overscan_axis",
    "overscan_order",
    "gain",
    "rdnoise",
    "saturate",
)
LAYOUT_KEYS = ("source", "suffixes", "keywords", "ports", "overscan_order", "amplifiers")
SATURATE_DEFAULT = {8: 255.0, 16: 65535.0}


# -- the parsed [layout] table -------------------------------------------------------------------


@dataclass(frozen=True)
class Ranges:
    """A section given by keyword pairs per axis (Subaru ``T_EFMN11``/``T_EFMX11``...).

    Each axis is a ``(min keyword, max keyword)`` pair of templates, or ``"data"`` for the
    amplifier's data range along that axis (an overscan spanning the data's rows).
    """

    x: tuple[str, str] | str
    y: tuple[str, str] | str

    @property
    def templated(self) -> bool:
        return any("{a" in k for ax in (self.x, self.y) if not isinstance(ax, str) for k in ax)


@dataclass(frozen=True)
class AxisPair:
    """A value given by one keyword per axis (``CCDBIN1``/``CCDBIN2`` for the binning)."""

    x: str
    y: str


Entry = str | float | Ranges | AxisPair


@dataclass(frozen=True)
class LayoutSpec:
    """The ``[layout]`` table of a profile, validated: where amplifiers come from."""

    source: str = "header"
    suffixes: tuple[tuple[str, ...], ...] = ()
    keywords: Mapping[str, tuple[Entry, ...]] = field(default_factory=dict)
    ports: Mapping[str, str] = field(default_factory=dict)
    overscan_order: str = "serial-first"
    amplifiers: tuple[Mapping[str, Any], ...] = ()


def parse_layout(doc: Mapping[str, Any], *, base: LayoutSpec | None, fail: Any) -> LayoutSpec:
    """Validate a ``[layout]`` table; families and suffixes it leaves out come from ``base``.

    ``fail(message)`` returns the exception to raise (it names the profile file).
    """
    unknown = set(doc) - set(LAYOUT_KEYS)
    if unknown:
        raise fail(f"unknown [layout] entries {sorted(unknown)} (known: {', '.join(LAYOUT_KEYS)})")
    source = doc.get("source", "header")
    if source not in ("header", "profile"):
        raise fail("layout.source must be 'header' or 'profile'")
    order = doc.get("overscan_order", base.overscan_order if base else "serial-first")
    if order not in ("serial-first", "parallel-first"):
        raise fail(f"layout.overscan_order must be 'serial-first' or 'parallel-first', got {order!r}")
    suffixes = base.suffixes if base else ()
    if "suffixes" in doc:
        raw = doc["suffixes"]
        if not (isinstance(raw, list) and all(isinstance(s, list) and all(isinstance(x, str) for x in s) for s in raw)):
            raise fail("layout.suffixes must be a list of lists of strings, e.g. [['A', 'B'], ['1', '2']]")
        suffixes = tuple(tuple(s) for s in raw)
    keywords: dict[str, tuple[Entry, ...]] = dict(base.keywords) if base else {}
    for name, entries in doc.get("keywords", {}).items():
        if name not in KEYWORD_FIELDS:
            raise fail(f"unknown [layout.keywords] field {name!r} (known: {', '.join(KEYWORD_FIELDS)})")
        if not isinstance(entries, list):
            entries = [entries]
        keywords[name] = tuple(_entry(name, e, fail) for e in entries)
    ports: dict[str, str] = dict(base.ports) if base else {}
    if "ports" in doc:
        unknown = set(doc["ports"]) - set(PORT_FIELDS)
        if unknown:
            raise fail(f"unknown [layout.ports] entries {sorted(unknown)} (known: {', '.join(PORT_FIELDS)})")
        ports = {k: str(v) for k, v in doc["ports"].items()}
        missing = {"count", "nx", "ny"} - set(ports)
        if missing:
            raise fail(f"[layout.ports] needs {', '.join(sorted(missing))}")
    amps: tuple[Mapping[str, Any], ...] = ()
    if source == "profile":
        amps = tuple(doc.get("amplifiers", ()))
        if not amps:
            raise fail("layout.source = 'profile' needs [[layout.amplifiers]] entries")
        for i, a in enumerate(amps):
            unknown = set(a) - set(AMP_KEYS)
            if unknown:
                raise fail(f"amplifier {i + 1}: unknown keys {sorted(unknown)} (known: {', '.join(AMP_KEYS)})")
            if "datasec" not in a:
                raise fail(f"amplifier {i + 1}: a datasec is required")
            for key in ("datasec", "biassec", "parallel_biassec", "ccdsec"):
                if key in a:
                    try:
                        Section.parse(a[key], keyword=key)
                    except SectionError as exc:
                        raise fail(f"amplifier {a.get('name', i + 1)}: {exc}") from exc
        with_ccdsec = sum("ccdsec" in a for a in amps)
        if 0 < with_ccdsec < len(amps):
            raise fail("give a ccdsec for every amplifier or for none")
    return LayoutSpec(
        source=source, suffixes=suffixes, keywords=keywords, ports=ports, overscan_order=order, amplifiers=amps
    )


def _entry(name: str, e: Any, fail: Any) -> Entry:
    """One member of a keyword family: a keyword template, a literal, or a per-axis table."""
    if isinstance(e, bool):
        raise fail(f"[layout.keywords] {name}: {e!r} is neither a keyword nor a value")
    if isinstance(e, str):
        if e.lstrip().startswith("["):
            if name not in SECTION_FIELDS:
                raise fail(f"[layout.keywords] {name}: a section literal {e!r} only fits a section field")
            try:
                Section.parse(e, keyword=name)
            except SectionError as exc:
                raise fail(f"[layout.keywords] {exc}") from exc
        return e
    if isinstance(e, (int, float)):
        if name not in NUMBER_FIELDS:
            raise fail(f"[layout.keywords] {name}: a number ({e}) only fits gain, rdnoise or saturate")
        return float(e)
    if isinstance(e, dict) and set(e) == {"x", "y"}:
        if name == "binning":
            if not all(isinstance(v, str) for v in e.values()):
                raise fail("[layout.keywords] binning: an {x, y} entry names one keyword per axis")
            return AxisPair(e["x"], e["y"])
        if name in SECTION_FIELDS:
            axes = []
            for ax in ("x", "y"):
                v = e[ax]
                if v == "data" and name != "datasec":
                    axes.append("data")
                elif isinstance(v, list) and len(v) == 2 and all(isinstance(k, str) for k in v):
                    axes.append((v[0], v[1]))
                else:
                    raise fail(
                        f"[layout.keywords] {name}: axis {ax} must be [min keyword, max keyword]"
                        + ("" if name == "datasec" else ' or "data"')
                        + f", got {v!r}"
                    )
            return Ranges(axes[0], axes[1])
    raise fail(f"[layout.keywords] {name}: cannot use entry {e!r}")


# -- provenance: where each fact came from ------------------------------------------------------

OriginKind = Literal["header", "profile", "default", "derived"]


def _card(value: Any) -> str:
    """A header value as a FITS card shows it: strings quoted, numbers as they are."""
    return f"'{value}'" if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Origin:
    """Where one fact of a chip's layout came from.

    Attributes
    ----------
    kind : {"header", "profile", "default", "derived"}
        ``header``: read from the header keywords listed in ``keywords`` (a keyword named by a
        profile entry counts as header); ``profile``: a value written in the profile (a literal
        of ``[layout.keywords]`` or a ``[[layout.amplifiers]]`` entry); ``default``: nothing gave
        it, ccdask's default applies; ``derived``: worked out by the resolver from other facts.
    keywords : tuple of (str, value)
        The header keywords used, each with its value as the header has it (strings stripped).
    detail : str
        What else a reader needs: the profile entry, the default, how it was derived.
    """

    kind: OriginKind
    keywords: tuple[tuple[str, Any], ...] = ()
    detail: str = ""

    def __str__(self) -> str:
        cards = ", ".join(f"{k} = {_card(v)}" for k, v in self.keywords)
        if self.kind == "header":
            return f"{cards} ({self.detail})" if self.detail else cards
        text = f"{self.kind}: {self.detail}" if self.detail else self.kind
        return f"{text} [{cards}]" if cards else text

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "keywords": [{"keyword": k, "value": v} for k, v in self.keywords],
            "detail": self.detail,
            "text": str(self),
        }


def _from_header(*keys: str, header: fits.Header, detail: str = "") -> Origin:
    return Origin("header", tuple((k, _card_value(header[k])) for k in keys), detail)


def _card_value(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


@dataclass(frozen=True)
class AmpExplanation:
    """Where each fact of one amplifier came from.

    ``origins`` maps a field (``datasec``, ``trimsec``, ``biassec``, ``parallel_biassec``,
    ``ccdsec``, ``detsec``, ``overscan_axis``, ``overscan_order``, ``gain``, ``rdnoise``,
    ``saturate``) to its :class:`Origin`; fields the amplifier does not have are absent, except
    ``gain``, ``rdnoise``, ``saturate`` and ``ccdsec``, always present. ``ccdsec``'s origin is
    the placement (the section the rule read, or how it packed). ``flips`` says per axis
    (``"x"``, ``"y"``) whether the amplifier is read backwards into the chip, ``flip_reason`` why.
    ``found`` holds the sections as found before placement (``datasec`` before trimming,
    ``trimsec``, ``ccdsec`` and ``detsec`` as the header or profile gives them), where present.
    """

    name: str
    origins: Mapping[str, Origin]
    flips: Mapping[str, bool]
    flip_reason: str
    found: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LayoutExplanation:
    """Why a chip's layout is what :func:`resolve` made of it.

    Attributes
    ----------
    rule : {"explicit", "CCDSEC", "DETSEC", "packing"}
        The placement rule used (``docs/profiles.md``: rules 0 to 3, ``rule_number``).
    rule_reason : str
        Why that rule applies.
    amplifiers_from : str
        How the amplifiers were found (a suffix series, ESO ports, one amplifier, the profile).
    binning : tuple of int
        On-chip binning ``(x, y)``, with ``binning_origin``.
    detsec_origin : Origin or None
        Where the chip's DETSEC came from (None: it has none).
    amplifiers : tuple of AmpExplanation
        In the order of the layout's amplifiers.
    """

    rule: str
    rule_number: int
    rule_reason: str
    amplifiers_from: str
    binning: tuple[int, int]
    binning_origin: Origin
    detsec_origin: Origin | None
    amplifiers: tuple[AmpExplanation, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "rule_number": self.rule_number,
            "rule_reason": self.rule_reason,
            "amplifiers_from": self.amplifiers_from,
            "binning": {"x": self.binning[0], "y": self.binning[1], "origin": self.binning_origin.to_dict()},
            "detsec_origin": None if self.detsec_origin is None else self.detsec_origin.to_dict(),
            "amplifiers": [
                {
                    "name": a.name,
                    "origins": {k: o.to_dict() for k, o in a.origins.items()},
                    "flips": dict(a.flips),
                    "flip_reason": a.flip_reason,
                    "found": dict(a.found),
                }
                for a in self.amplifiers
            ],
        }


# -- step 1: collect the amplifiers' raw facts ---------------------------------------------------


@dataclass
class _Raw:
    """One amplifier as found, before placement. ``src`` maps each field to where it came from."""

    name: str
    datasec: Section
    trimsec: Section | None = None
    biassec: Section | None = None
    parallel: Section | None = None
    ccdsec: Section | None = None
    detsec: Section | None = None
    overscan_axis: str | None = None
    overscan_order: str = "serial-first"
    gain: float | None = None
    rdnoise: float | None = None
    saturate: float | None = None
    explicit: Section | None = None  # a profile's ccdsec: the final place, as given
    src: dict[str, str] = field(default_factory=dict)
    origin: dict[str, Origin] = field(default_factory=dict)  # the same, structured (explanations)


def _expand(template: str, suffix: str) -> str | None:
    """``template`` for amplifier ``suffix``: ``{a}`` may be empty (``DATASEC{a}`` is DATASEC for a
    one-amplifier chip), ``{a+}`` may not (``DSEC{a+}`` means nothing without a suffix: None)."""
    if "{a+}" in template:
        if not suffix:
            return None
        template = template.replace("{a+}", suffix)
    return template.replace("{a}", suffix)


def _present(value: Any) -> bool:
    if value is None or isinstance(value, fits.card.Undefined):
        return False
    if isinstance(value, str):
        return value.strip() != ""
    return not (isinstance(value, (int, float)) and value == 0)


def _lookup(header: fits.Header, key: str) -> Any:
    value = header.get(key) if key in header else None
    return value if _present(value) else None


def _section_entry(
    header: fits.Header, e: Entry, suffix: str, shape: tuple[int, int], data: Section | None
) -> tuple[Section, str, Origin] | None:
    """The section an entry gives for amplifier ``suffix`` (resolved, in bounds), or None; with
    its label for messages and its origin."""
    if isinstance(e, str):
        if e.lstrip().startswith("["):
            label = f"profile section {e}"
            text = e
            origin = Origin("profile", detail=f"[layout.keywords] literal {e}")
        else:
            key = _expand(e, suffix)
            text = None if key is None else _lookup(header, key)
            if key is None or text is None:
                return None
            label = f"{key}={str(text).strip()!r}"
            origin = _from_header(key, header=header)
            e = key
        try:
            sec = Section.parse(str(text), keyword=None if e.startswith("[") else e)
            return sec.validate(shape, keyword=None if e.startswith("[") else e), label, origin
        except SectionError as exc:
            raise ProfileError(str(exc)) from exc
    if isinstance(e, Ranges):
        bounds, labels = [], []
        used: list[str] = []
        notes: list[str] = []
        for ax, name in ((e.x, "x"), (e.y, "y")):
            if isinstance(ax, str):
                if data is None:
                    return None
                r = data.normalized().x if name == "x" else data.normalized().y
                bounds.append((r.start, r.stop))
                labels.append(f"{name} as the data")
                notes.append(f"{name} as the data section")
                continue
            kmin, kmax = (_expand(k, suffix) or "" for k in ax)
            if not kmin or not kmax:
                return None
            vmin, vmax = _lookup(header, kmin), _lookup(header, kmax)
            if vmin is None or vmax is None:
                return None
            try:
                lo, hi = int(vmin), int(vmax)
            except (TypeError, ValueError) as exc:
                raise ProfileError(f"{kmin}={vmin!r}, {kmax}={vmax!r}: not pixel numbers") from exc
            bounds.append((lo, hi))
            labels.append(f"{kmin}={vmin}..{kmax}={vmax}")
            used.extend((kmin, kmax))
        (x0, x1), (y0, y1) = bounds
        label = ", ".join(labels)
        if min(x0, x1, y0, y1) < 1:
            raise ProfileError(f"{label}: FITS pixel numbers start at 1")
        sec = Section(Range(x0, x1, x0 > x1), Range(y0, y1, y0 > y1))
        origin = _from_header(*used, header=header, detail="; ".join(["pixel-number keywords", *notes]))
        try:
            return sec.validate(shape, keyword=label), label, origin
        except SectionError as exc:
            raise ProfileError(str(exc)) from exc
    return None


def _first_section(
    header: fits.Header, entries: Sequence[Entry], suffix: str, shape: tuple[int, int], data: Section | None = None
) -> tuple[Section, str, Origin] | None:
    for e in entries:
        found = _section_entry(header, e, suffix, shape, data)
        if found is not None:
            return found
    return None


def _number_value(value: Any, label: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{label}={value!r} is not a number") from exc


def _first_number(header: fits.Header, entries: Sequence[Entry], suffix: str) -> tuple[float, str, Origin] | None:
    for e in entries:
        if isinstance(e, float):
            return e, "profile", Origin("profile", detail=f"[layout.keywords] literal {e:g}")
        if isinstance(e, str):
            key = _expand(e, suffix)
            value = None if key is None else _lookup(header, key)
            if key is not None and value is not None:
                return _number_value(value, key), key, _from_header(key, header=header)
    return None


def _binning(header: fits.Header, entries: Sequence[Entry]) -> tuple[tuple[int, int], str, Origin]:
    """(bin y, bin x) from the first binning entry present, else (1, 1); with label and origin."""
    for e in entries:
        if isinstance(e, str):
            value = _lookup(header, e)
            if value is None:
                continue
            parts = str(value).split()
            try:
                bx, by = (int(parts[0]), int(parts[1])) if len(parts) == 2 else (int(parts[0]),) * 2
            except (ValueError, IndexError) as exc:
                raise ProfileError(f"{e}={value!r}: expected two binning factors like '2 2'") from exc
            label = f"{e}={str(value).strip()!r}"
            origin = _from_header(e, header=header)
        elif isinstance(e, AxisPair):
            vx, vy = _lookup(header, e.x), _lookup(header, e.y)
            if vx is None or vy is None:
                continue
            bx, by = int(_number_value(vx, e.x)), int(_number_value(vy, e.y))
            label = f"{e.x}={vx}, {e.y}={vy}"
            origin = _from_header(e.x, e.y, header=header)
        else:
            continue
        if bx < 1 or by < 1:
            raise ProfileError(f"{label}: binning factors must be positive")
        return (by, bx), label, origin
    return (1, 1), "no binning keyword", Origin("default", detail="no binning keyword: 1 x 1")


def _templated(e: Entry) -> bool:
    if isinstance(e, str):
        return "{a}" in e or "{a+}" in e
    return isinstance(e, Ranges) and e.templated


def _has_data(header: fits.Header, spec: LayoutSpec, suffix: str) -> bool:
    for e in spec.keywords.get("datasec", ()):
        if not _templated(e):
            continue
        if isinstance(e, str) and _lookup(header, _expand(e, suffix) or "") is not None:
            return True
        if isinstance(e, Ranges) and all(
            _lookup(header, _expand(k, suffix) or "") is not None
            for ax in (e.x, e.y)
            if not isinstance(ax, str)
            for k in ax
        ):
            return True
    return False


def amplifier_suffixes(header: fits.Header, spec: LayoutSpec) -> tuple[str, ...]:
    """The suffixes naming this header's amplifiers: the series with the most data sections."""
    best: tuple[str, ...] = ()
    for series in spec.suffixes:
        hits = tuple(s for s in series if _has_data(header, spec, s))
        if len(hits) > len(best):
            best = hits
    return best


def _collect_header(header: fits.Header, spec: LayoutSpec, shape: tuple[int, int]) -> list[_Raw]:
    suffixes = amplifier_suffixes(header, spec)
    if not suffixes and spec.ports and _lookup(header, spec.ports["count"]) is not None:
        return _collect_ports(header, spec, shape)
    kw = spec.keywords
    amps = []
    for suffix in suffixes or ("",):
        name = suffix or "A"
        src: dict[str, str] = {}
        data = _first_section(header, kw.get("datasec", ()), suffix, shape)
        trim = _first_section(header, kw.get("trimsec", ()), suffix, shape)
        if data is None and trim is None:
            if suffix:
                raise ProfileError(f"amplifier {name}: no data section")
            data = (
                Section.parse("[*,*]").resolve(shape),
                "the whole image (no DATASEC)",
                Origin("default", detail="the whole image: no data or trim section keyword"),
            )
        if data is None:
            data, trim = trim, None
        assert data is not None
        raw = _Raw(name, data[0], src=src, overscan_order=spec.overscan_order)
        src["datasec"] = data[1]
        raw.origin["datasec"] = data[2]
        if trim is not None and trim[0].normalized() != data[0].normalized():
            raw.trimsec, src["trimsec"], raw.origin["trimsec"] = trim
        for fld, attr in (
            ("biassec", "biassec"),
            ("parallel_biassec", "parallel"),
            ("ccdsec", "ccdsec"),
            ("detsec", "detsec"),
        ):
            found = _first_section(
                header, kw.get(fld, ()), suffix, shape if fld not in ("ccdsec", "detsec") else (2**31, 2**31), data[0]
            )
            if found is not None:
                setattr(raw, attr, found[0])
                src[fld] = found[1]
                raw.origin[fld] = found[2]
        for fld in NUMBER_FIELDS:
            found_n = _first_number(header, kw.get(fld, ()), suffix)
            if found_n is not None:
                setattr(raw, fld, found_n[0])
                src[fld] = found_n[1]
                raw.origin[fld] = found_n[2]
        if raw.parallel is not None and raw.biassec is None:
            raw.biassec, raw.parallel, raw.overscan_axis = raw.parallel, None, "parallel"
            src["biassec"] = src.pop("parallel_biassec")
            raw.origin["biassec"] = raw.origin.pop("parallel_biassec")
            raw.origin["overscan_axis"] = Origin(
                "derived", detail="a parallel overscan without a serial one is the amplifier's one overscan"
            )
        amps.append(raw)
    return amps


def _collect_ports(header: fits.Header, spec: LayoutSpec, shape: tuple[int, int]) -> list[_Raw]:
    """Amplifiers from an ESO-style port description: sizes, not sections.

    Each port (``ESO DET OUTi``) reads ``NX`` x ``NY`` data pixels with ``PRSCX``/``PRSCY``
    prescan and ``OVSCX``/``OVSCY`` overscan pixels; ``X``/``Y`` is the corner it sits at. The raw
    image is stored in detector orientation, each port's block laid out from its own corner:
    prescan nearest the port, then data, then overscan (a port at the low edge, ``X = 1``, gives
    ``prescan | data | overscan``; one at the high edge gives ``overscan | data | prescan``).
    Ports at the low edge come first along each axis.
    """
    p = spec.ports
    count_key = p["count"]
    count = int(_number_value(_lookup(header, count_key), count_key))
    ports = []
    used: dict[str, list[str]] = {}  # the keywords each port's description was read from
    for i in range(1, count + 1):
        s = str(i)
        used[s] = [count_key]

        def get(fld: str, default: int | None = None, suffix: str = s) -> int:
            key = p.get(fld, "").replace("{a}", suffix)
            value = header.get(key) if key and key in header else None
            if value is None:
                if default is None:
                    raise ProfileError(f"port {suffix}: keyword {key or fld} is missing")
                return default
            used[suffix].append(key)
            return int(_number_value(value, key))

        ports.append(
            {
                "name": s,
                "nx": get("nx"),
                "ny": get("ny"),
                "prscx": get("prscx", 0),
                "prscy": get("prscy", 0),
                "ovscx": get("ovscx", 0),
                "ovscy": get("ovscy", 0),
                "x": get("x", 1),
                "y": get("y", 1),
            }
        )
    # per axis: the blocks of ports at the low edge, then those at the high edge
    starts: dict[tuple[str, int], int] = {}
    for axis, n_key, pre_key, over_key, total in (
        ("x", "nx", "prscx", "ovscx", shape[1]),
        ("y", "ny", "prscy", "ovscy", shape[0]),
    ):
        groups = sorted({q[axis] for q in ports})
        offset = 0
        for where_ in groups:
            sizes = {(q[n_key], q[pre_key], q[over_key]) for q in ports if q[axis] == where_}
            if len(sizes) > 1:
                raise ProfileError(f"ports at {axis.upper()} = {where_} differ in size along {axis}: {sorted(sizes)}")
            n, pre, over = sizes.pop()
            starts[(axis, where_)] = offset
            offset += n + pre + over
        if offset != total:
            names = ", ".join(
                f"OUT{q['name']} {pre_key.upper()}+{n_key.upper()}+{over_key.upper()}="
                f"{q[pre_key]}+{q[n_key]}+{q[over_key]}"
                for q in ports
            )
            raise ProfileError(
                f"the ports' blocks span {offset} pixels along {axis} ({names}) but the "
                f"image has {total} (NAXIS{1 if axis == 'x' else 2}={total})"
            )
    amps = []
    for q in ports:
        ranges = {}
        for axis, n_key, pre_key, over_key in (("x", "nx", "prscx", "ovscx"), ("y", "ny", "prscy", "ovscy")):
            low = q[axis] == 1
            s0 = starts[(axis, q[axis])] + 1
            n, pre, over = q[n_key], q[pre_key], q[over_key]
            if low:
                data = (s0 + pre, s0 + pre + n - 1)
                ovs = (s0 + pre + n, s0 + pre + n + over - 1) if over else None
            else:
                data = (s0 + over, s0 + over + n - 1)
                ovs = (s0, s0 + over - 1) if over else None
            ranges[axis] = (data, ovs)
        (dx, ox), (dy, oy) = ranges["x"], ranges["y"]
        data = Section(Range(dx[0], dx[1]), Range(dy[0], dy[1]))
        where_ = f"ESO port {q['name']}"
        raw = _Raw(q["name"], data, overscan_order=spec.overscan_order, src={"datasec": where_})
        port_origin = _from_header(
            *used[q["name"]], header=header, detail=f"{where_}: prescan, data and overscan sizes from its corner"
        )
        raw.origin["datasec"] = port_origin
        serial = Section(Range(ox[0], ox[1]), Range(dy[0], dy[1])) if ox else None
        parallel = Section(Range(dx[0], dx[1]), Range(oy[0], oy[1])) if oy else None
        if serial is not None:
            raw.biassec, raw.src["biassec"] = serial, f"{where_} OVSCX={q['ovscx']}"
            raw.origin["biassec"] = raw.origin["overscan_axis"] = port_origin
            if parallel is not None:
                raw.parallel, raw.src["parallel_biassec"] = parallel, f"{where_} OVSCY={q['ovscy']}"
                raw.origin["parallel_biassec"] = port_origin
        elif parallel is not None:
            raw.biassec, raw.overscan_axis = parallel, "parallel"
            raw.src["biassec"] = f"{where_} OVSCY={q['ovscy']}"
            raw.origin["biassec"] = raw.origin["overscan_axis"] = port_origin
        for fld in NUMBER_FIELDS:
            if fld in p:
                key = p[fld].replace("{a}", q["name"])
                value = _lookup(header, key)
                if value is not None:
                    setattr(raw, fld, _number_value(value, key))
                    raw.src[fld] = key
                    raw.origin[fld] = _from_header(key, header=header)
        amps.append(raw)
    return amps


def _collect_profile(header: fits.Header, spec: LayoutSpec, shape: tuple[int, int]) -> list[_Raw]:
    amps = []
    for i, a in enumerate(spec.amplifiers):
        name = str(a.get("name", chr(ord("A") + i)))
        data = Section.parse(a["datasec"], keyword=f"datasec of {name}").validate(shape, keyword=f"datasec of {name}")
        raw = _Raw(
            name,
            data,
            overscan_axis=a.get("overscan_axis"),
            overscan_order=a.get("overscan_order", spec.overscan_order),
            src={"datasec": "profile"},
        )

        def given(key: str, a: Mapping[str, Any] = a) -> Origin:
            return Origin("profile", detail=f"[[layout.amplifiers]] {key} = {_card(a[key])}")

        raw.origin["datasec"] = given("datasec")
        for key in ("overscan_axis", "overscan_order"):
            if key in a:
                raw.origin[key] = given(key)
        for key, attr in (("biassec", "biassec"), ("parallel_biassec", "parallel")):
            if key in a:
                setattr(
                    raw,
                    attr,
                    Section.parse(a[key], keyword=f"{key} of {name}").validate(shape, keyword=f"{key} of {name}"),
                )
                raw.src[key] = "profile"
                raw.origin[key] = given(key)
        if "ccdsec" in a:
            raw.explicit = Section.parse(a["ccdsec"], keyword=f"ccdsec of {name}").resolve(data.shape)
            if raw.explicit.shape != data.shape:
                raise ProfileError(f"amplifier {name}: datasec {data} and ccdsec {raw.explicit} differ in shape")
            raw.origin["ccdsec"] = given("ccdsec")
        for fld in NUMBER_FIELDS:
            value = a.get(fld)
            if isinstance(value, str):
                if value not in header:
                    raise ProfileError(f"profile takes {fld} from keyword {value}, which the header lacks")
                setattr(raw, fld, _number_value(header[value], value))
                raw.src[fld] = value
                raw.origin[fld] = _from_header(value, header=header, detail="the keyword the profile names")
            elif value is not None:
                setattr(raw, fld, _number_value(value, fld))
                raw.src[fld] = "profile"
                raw.origin[fld] = given(fld)
        amps.append(raw)
    return amps


# -- step 2: place them --------------------------------------------------------------------------


def _axis(sec: Section, axis: str) -> Range:
    return sec.x if axis == "x" else sec.y


def _fwd(r: Range) -> tuple[int, int]:
    return (min(r.start, r.stop), max(r.start, r.stop))


def _flipped(r: Range) -> bool:
    return r.start > r.stop


def _place_by(
    amps: list[_Raw],
    attr: str,
    binning: tuple[int, int],
    bin_label: str,
) -> tuple[dict[str, dict[str, tuple[int, bool]]], dict[str, tuple[int, int]], dict[str, int]]:
    """Chip positions (0-based start, flip) per amplifier and axis from CCDSEC[n] or DETSEC[n].

    Also returns the unbinned bounding box of the placement sections per axis and the factor
    (1 or the binning) by which they count pixels.
    """
    key = "ccdsec" if attr == "ccdsec" else "detsec"
    bbox: dict[str, tuple[int, int]] = {}
    factors: dict[str, int] = {}
    for axis, b in (("x", binning[1]), ("y", binning[0])):
        los, his, fs = [], [], set()
        for a in amps:
            place = _axis(getattr(a, attr), axis)
            lo, hi = _fwd(place)
            n = _axis(a.datasec, axis).length
            length = hi - lo + 1
            if length == n:
                fs.add(1)
            elif length == n * b:
                fs.add(b)
            else:
                raise ProfileError(
                    f"amplifier {a.name}: {a.src[key]} spans {length} pixels along {axis} but "
                    f"{a.src['datasec']} has {n}" + (f" ({bin_label}: {n} x {b} = {n * b})" if b > 1 else "")
                )
            los.append(lo)
            his.append(hi)
        if len(fs) > 1:
            raise ProfileError(f"the amplifiers' {key.upper()}s count pixels both binned and unbinned along {axis}")
        factors[axis] = fs.pop()
        bbox[axis] = (min(los), max(his))
    out: dict[str, dict[str, tuple[int, bool]]] = {}
    for a in amps:
        place = getattr(a, attr)
        out[a.name] = {}
        for axis in ("x", "y"):
            lo, _ = _fwd(_axis(place, axis))
            start, f = lo - bbox[axis][0], factors[axis]
            if start % f:
                raise ProfileError(
                    f"amplifier {a.name}: {a.src[key]} starts {start} unbinned pixels into the "
                    f"chip, not a whole number of {f}-pixel bins ({bin_label})"
                )
            flip = _flipped(_axis(place, axis)) != _flipped(_axis(a.datasec, axis))
            out[a.name][axis] = (start // f, flip)
    return out, bbox, factors


def _pack(amps: list[_Raw]) -> dict[str, dict[str, tuple[int, bool]]]:
    """Chip positions from the data sections alone: packed in raw order, gaps removed."""
    out: dict[str, dict[str, tuple[int, bool]]] = {a.name: {} for a in amps}
    for axis in ("x", "y"):
        spans = {a.name: _fwd(_axis(a.datasec, axis)) for a in amps}
        distinct = sorted(set(spans.values()))
        for (lo1, hi1), (lo2, hi2) in pairwise(distinct):
            if lo2 <= hi1:
                a1 = next(a for a in amps if spans[a.name] == (lo1, hi1))
                a2 = next(a for a in amps if spans[a.name] == (lo2, hi2))
                raise ProfileError(
                    f"amplifiers {a1.name} and {a2.name} overlap in part along {axis} ({a1.src['datasec']}, "
                    f"{a2.src['datasec']}) and give no CCDSEC/DETSEC to place them"
                )
        position, offset = {}, 0
        for span in distinct:
            position[span] = offset
            offset += span[1] - span[0] + 1
        for a in amps:
            out[a.name][axis] = (position[spans[a.name]], _flipped(_axis(a.datasec, axis)))
    return out


def _chip_section(header: fits.Header, spec: LayoutSpec, fld: str) -> tuple[Section, str] | None:
    """The chip-wide section of a family (its templates with no suffix), if the header has one."""
    for e in spec.keywords.get(fld, ()):
        if isinstance(e, str) and not e.lstrip().startswith("["):
            key = _expand(e, "") or ""
            text = _lookup(header, key) if key else None
            if text is not None:
                try:
                    return Section.parse(str(text), keyword=key).resolve((2**31, 2**31)), f"{key}={str(text).strip()!r}"
                except SectionError as exc:
                    raise ProfileError(str(exc)) from exc
    return None


def _check_lengths(
    label: str, sec: Section, shape: tuple[int, int], binning: tuple[int, int], bin_label: str, what: str
) -> None:
    for axis, n, b in (("x", shape[1], binning[1]), ("y", shape[0], binning[0])):
        length = _axis(sec, axis).length
        if length not in (n, n * b):
            raise ProfileError(
                f"{label} spans {length} pixels along {axis} but {what} has {n}"
                + (f" ({bin_label}: {n} x {b} = {n * b})" if b > 1 else "")
            )


def resolve(
    spec: LayoutSpec,
    header: fits.Header,
    shape: tuple[int, int],
    *,
    chip: str,
    bitpix: int | None = None,
    detsec_keys: Sequence[str] = ("DETSEC",),
) -> ChipLayout:
    """The amplifier layout of one raw chip of ``shape`` (ny, nx) described by ``header``."""
    return resolve_explained(spec, header, shape, chip=chip, bitpix=bitpix, detsec_keys=detsec_keys)[0]


def resolve_explained(
    spec: LayoutSpec,
    header: fits.Header,
    shape: tuple[int, int],
    *,
    chip: str,
    bitpix: int | None = None,
    detsec_keys: Sequence[str] = ("DETSEC",),
) -> tuple[ChipLayout, LayoutExplanation]:
    """:func:`resolve`'s layout (the same object) and where each of its facts came from.

    The explanation names the placement rule and why it applies, and for each amplifier the
    keyword (with its value), profile entry or default behind each section and number, and its
    flips with their reason (``ccdask inspect`` prints it).
    """
    shape = (int(shape[0]), int(shape[1]))
    collect = _collect_profile if spec.source == "profile" else _collect_header
    amps = collect(header, spec, shape)
    binning, bin_label, bin_origin = _binning(header, spec.keywords.get("binning", ()))
    chip_detsec, chip_detsec_label, chip_detsec_origin = None, "", None
    for key in detsec_keys:
        text = _lookup(header, key)
        if text is not None:
            try:
                chip_detsec = Section.parse(str(text), keyword=key).resolve((2**31, 2**31))
            except SectionError as exc:
                raise ProfileError(str(exc)) from exc
            chip_detsec_label = f"{key}={str(text).strip()!r}"
            chip_detsec_origin = _from_header(key, header=header)
            break
    multi = len(amps) > 1
    header_source = spec.source == "header"

    # -- placement: explicit (profile), CCDSEC[n], DETSEC[n] or packing -------------------------
    detector_oriented = False
    if all(a.explicit is not None for a in amps):
        positions = {
            a.name: {ax: (_fwd(_axis(a.explicit, ax))[0] - 1, _flipped(_axis(a.datasec, ax))) for ax in ("x", "y")}
            for a in amps
            if a.explicit is not None
        }
        rule = "profile ccdsec"
    elif header_source and all(a.ccdsec is not None for a in amps):
        positions, bbox, _ = _place_by(amps, "ccdsec", binning, bin_label)
        rule = "CCDSEC"
        if multi:
            _check_chip_bbox(header, spec, "ccdsec", bbox)
    elif header_source and all(a.detsec is not None for a in amps):
        positions, bbox, _ = _place_by(amps, "detsec", binning, bin_label)
        rule = "DETSEC"
        detector_oriented = True
        if multi and chip_detsec is not None:
            lo_x, hi_x = _fwd(chip_detsec.x)
            lo_y, hi_y = _fwd(chip_detsec.y)
            if (lo_x, hi_x) != bbox["x"] or (lo_y, hi_y) != bbox["y"]:
                raise ProfileError(
                    f"the amplifiers' DETSECs cover [{bbox['x'][0]}:{bbox['x'][1]},{bbox['y'][0]}:{bbox['y'][1]}] "
                    f"but the chip's {chip_detsec_label}"
                )
    else:
        partial = [(a.name, fld) for a in amps for fld in ("ccdsec", "detsec") if getattr(a, fld) is not None]
        if header_source and partial and multi:
            have = sorted({f"{fld.upper()} of {n}" for n, fld in partial})
            lack = sorted({a.name for a in amps} - {n for n, _ in partial})
            raise ProfileError(
                f"only some amplifiers are placed ({', '.join(have)}); "
                f"{', '.join(lack) or 'the others'} lack a CCDSEC/DETSEC of the same kind"
            )
        positions = _pack(amps)
        rule = "packing"

    # -- pieces in the chip; trim sections crop them ---------------------------------------------
    pieces: list[tuple[_Raw, Section, tuple[int, int, int, int]]] = []  # amp, raw datasec, chip box
    untrimmed = (
        max(positions[a.name]["y"][0] + a.datasec.shape[0] for a in amps),
        max(positions[a.name]["x"][0] + a.datasec.shape[1] for a in amps),
    )
    for a in amps:
        ranges, box = {}, []
        for axis in ("x", "y"):
            p0, flip = positions[a.name][axis]
            d0, d1 = _fwd(_axis(a.datasec, axis))
            t0, t1 = (d0, d1)
            if a.trimsec is not None:
                t0, t1 = _fwd(_axis(a.trimsec, axis))
                if t0 < d0 or t1 > d1:
                    raise ProfileError(
                        f"amplifier {a.name}: trim section {a.src['trimsec']} is not inside "
                        f"its data section {a.src['datasec']}"
                    )
            c0 = p0 + (t0 - d0 if not flip else d1 - t1)
            ranges[axis] = Range(t1, t0, True) if flip else Range(t0, t1, False)
            box.append((c0, c0 + t1 - t0 + 1))
        (x0, x1), (y0, y1) = box
        pieces.append((a, Section(ranges["x"], ranges["y"]), (y0, y1, x0, x1)))
    oy = min(p[2][0] for p in pieces)
    ox = min(p[2][2] for p in pieces)
    ny = max(p[2][1] for p in pieces) - oy
    nx = max(p[2][3] for p in pieces) - ox
    covered = sum((b[1] - b[0]) * (b[3] - b[2]) for _, _, b in pieces)
    for i, (a, _, b) in enumerate(pieces):
        for a2, _, b2 in pieces[i + 1 :]:
            if max(b[0], b2[0]) < min(b[1], b2[1]) and max(b[2], b2[2]) < min(b[3], b2[3]):
                raise ProfileError(
                    f"amplifiers {a.name} and {a2.name} land on the same chip pixels "
                    f"(placed by {rule}: {_describe(a)}; {_describe(a2)})"
                )
    if covered != ny * nx:
        raise ProfileError(
            f"the amplifiers (placed by {rule}) cover {covered} of the {ny}x{nx} pixels of "
            f"the chip they span, leaving holes: " + "; ".join(_describe(a) for a, _, _ in pieces)
        )

    # -- cross-checks of the assembled shape -----------------------------------------------------
    if header_source:
        chip_data = _chip_section(header, spec, "datasec") if multi else None
        if chip_data is not None:
            sec, label = chip_data
            bx0 = min(_fwd(a.datasec.x)[0] for a in amps)
            bx1 = max(_fwd(a.datasec.x)[1] for a in amps)
            by0 = min(_fwd(a.datasec.y)[0] for a in amps)
            by1 = max(_fwd(a.datasec.y)[1] for a in amps)
            data_area = sum(a.datasec.shape[0] * a.datasec.shape[1] for a in amps)
            if data_area == (bx1 - bx0 + 1) * (by1 - by0 + 1):  # the data sections touch
                if sec.shape != untrimmed:
                    raise ProfileError(
                        f"the chip's {label} is {sec.shape[0]}x{sec.shape[1]} but its amplifiers' "
                        f"data sections assemble to {untrimmed[0]}x{untrimmed[1]}: "
                        + "; ".join(a.src["datasec"] for a in amps)
                    )
            else:
                s = sec.normalized()
                if not (s.x.start <= bx0 and bx1 <= s.x.stop and s.y.start <= by0 and by1 <= s.y.stop):
                    raise ProfileError(
                        f"the chip's {label} does not contain its amplifiers' data sections: "
                        + "; ".join(a.src["datasec"] for a in amps)
                    )
        if rule != "DETSEC" and chip_detsec is not None:
            _check_lengths(
                f"the chip's {chip_detsec_label}", chip_detsec, untrimmed, binning, bin_label, "the assembled chip"
            )
        if rule == "packing" and multi:
            chip_ccd = _chip_section(header, spec, "ccdsec")
            if chip_ccd is not None:
                _check_lengths(
                    f"the chip's {chip_ccd[1]}", chip_ccd[0], untrimmed, binning, bin_label, "the assembled chip"
                )

    amplifiers, explained = [], []
    for a, datasec, (y0, y1, x0, x1) in pieces:
        ccdsec = Section(Range(x0 - ox + 1, x1 - ox), Range(y0 - oy + 1, y1 - oy))
        amplifiers.append(
            Amplifier(
                name=a.name,
                datasec=datasec,
                ccdsec=ccdsec,
                biassec=a.biassec,
                overscan_axis=a.overscan_axis,  # type: ignore[arg-type]  # validated by Amplifier
                gain=1.0 if a.gain is None else a.gain,
                rdnoise=a.rdnoise,
                saturate=SATURATE_DEFAULT.get(bitpix) if a.saturate is None else a.saturate,  # type: ignore[arg-type]
                parallel_biassec=a.parallel,
                overscan_order=a.overscan_order,  # type: ignore[arg-type]
            )
        )
        explained.append(_explain_amp(a, amplifiers[-1], rule, positions[a.name], bitpix))
    detsec = chip_detsec
    if detector_oriented:
        # the pixels were turned into detector orientation: the chip lies forward in DETSEC
        if detsec is None:
            detsec = Section(Range(bbox["x"][0], bbox["x"][1]), Range(bbox["y"][0], bbox["y"][1]))
            chip_detsec_origin = Origin(
                "derived", detail="the box the amplifiers' DETSECs cover (the header gives no chip DETSEC)"
            )
        elif detsec.normalized() != detsec:
            assert chip_detsec_origin is not None
            chip_detsec_origin = Origin(
                "header",
                chip_detsec_origin.keywords,
                "turned forward: rule DETSEC put the pixels in detector orientation",
            )
        detsec = detsec.normalized()
    layout = ChipLayout(chip, shape, tuple(amplifiers), detsec=detsec)
    number = {"explicit": 0, "CCDSEC": 1, "DETSEC": 2, "packing": 3}
    name = "explicit" if rule == "profile ccdsec" else rule
    explanation = LayoutExplanation(
        rule=name,
        rule_number=number[name],
        rule_reason=_rule_reason(name, amps, spec),
        amplifiers_from=_amplifiers_from(header, spec, amps),
        binning=(binning[1], binning[0]),
        binning_origin=bin_origin,
        detsec_origin=chip_detsec_origin,
        amplifiers=tuple(explained),
    )
    return layout, explanation


def _keys(origin: Origin | None) -> str:
    """The keywords of an origin (``CCDSECA``), or what it is (``the profile's ccdsec``)."""
    if origin is None:
        return "?"
    if origin.keywords and (len(origin.keywords) <= 4 or not origin.detail):
        return "/".join(k for k, _ in origin.keywords)
    return origin.detail.split(" = ")[0].split(": ")[0] or origin.kind


def _rule_reason(rule: str, amps: Sequence[_Raw], spec: LayoutSpec) -> str:
    if rule == "explicit":
        return "every amplifier of the profile's [[layout.amplifiers]] gives a ccdsec"
    if rule in ("CCDSEC", "DETSEC"):
        fld = rule.lower()
        return f"every amplifier has a {rule} ({', '.join(_keys(a.origin.get(fld)) for a in amps)})"
    if spec.source == "profile":
        return "the profile's amplifiers give no ccdsec: their data sections are packed in raw order"
    return "no amplifier has a CCDSEC or DETSEC: the data sections are packed in raw order, gaps removed"


def _amplifiers_from(header: fits.Header, spec: LayoutSpec, amps: Sequence[_Raw]) -> str:
    if spec.source == "profile":
        return f"the profile's [[layout.amplifiers]] ({len(amps)})"
    suffixes = amplifier_suffixes(header, spec)
    if suffixes:
        return f"suffixes {', '.join(suffixes)} (the series naming the most data sections)"
    if spec.ports and _lookup(header, spec.ports["count"]) is not None:
        return f"ESO ports ({spec.ports['count']} = {_lookup(header, spec.ports['count'])})"
    return "one amplifier (no suffixed data section)"


def _explain_amp(
    a: _Raw, amp: Amplifier, rule: str, position: Mapping[str, tuple[int, bool]], bitpix: int | None
) -> AmpExplanation:
    """Where each fact of the placed amplifier ``amp`` (collected as ``a``) came from."""
    origins = dict(a.origin)
    data = a.origin["datasec"]
    crop = " (cropped to the trim section)" if a.trimsec is not None else ""
    if rule == "profile ccdsec":
        placed = a.origin["ccdsec"]
    elif rule in ("CCDSEC", "DETSEC"):
        src = a.origin[rule.lower()]
        how = "relative to the lowest corner of the amplifiers' " + rule + "s"
        placed = Origin(src.kind, src.keywords, how + crop)
    else:
        placed = Origin(
            "derived",
            data.keywords,
            "the data sections packed in raw order along each axis, gaps between them removed" + crop,
        )
    origins["ccdsec"] = placed
    if rule == "CCDSEC" and "detsec" in origins:
        d = origins["detsec"]
        origins["detsec"] = Origin(d.kind, d.keywords, "found, not used: CCDSEC places the amplifiers")
    if amp.biassec is not None and "overscan_axis" not in origins:
        origins["overscan_axis"] = Origin("derived", detail="from where the overscan lies against the data section")
    if amp.parallel_biassec is not None and "overscan_order" not in origins:
        origins["overscan_order"] = Origin("profile", detail=f"layout.overscan_order = '{amp.overscan_order}'")
    if a.gain is None:
        origins["gain"] = Origin("default", detail="no gain keyword or value: 1 e-/ADU")
    if a.rdnoise is None:
        origins["rdnoise"] = Origin("default", detail="unknown: no read noise keyword or value")
    if a.saturate is None:
        origins["saturate"] = (
            Origin("default", detail=f"no saturation keyword or value: the {bitpix}-bit maximum")
            if amp.saturate is not None
            else Origin("default", detail="unknown: no saturation keyword or value, and not 8- or 16-bit data")
        )
    flips = {axis: position[axis][1] for axis in ("x", "y")}
    reasons = []
    for axis in ("x", "y"):
        if not flips[axis]:
            continue
        place = a.ccdsec if rule == "CCDSEC" else a.detsec if rule == "DETSEC" else None
        if place is None:
            reasons.append(f"{axis}: {_keys(data)} is written backwards")
        elif _flipped(_axis(place, axis)):
            reasons.append(f"{axis}: {_keys(placed)} runs backwards, {_keys(data)} forwards")
        else:
            reasons.append(f"{axis}: {_keys(data)} runs backwards, {_keys(placed)} forwards")
    if not reasons:
        same = f"{_keys(placed)} and {_keys(data)} run the same way" if rule in ("CCDSEC", "DETSEC") else ""
        reasons.append(same or f"{_keys(data)} runs forwards")
    found = {
        k: str(sec)
        for k, sec in (
            ("datasec", a.datasec),
            ("trimsec", a.trimsec),
            ("ccdsec", a.explicit or a.ccdsec),
            ("detsec", a.detsec),
        )
        if sec is not None
    }
    return AmpExplanation(a.name, origins, flips, "; ".join(reasons), found)


def _describe(a: _Raw) -> str:
    parts = [a.src["datasec"]] + [a.src[k] for k in ("ccdsec", "detsec", "trimsec") if k in a.src]
    return f"{a.name}: " + ", ".join(parts)


def _check_chip_bbox(header: fits.Header, spec: LayoutSpec, fld: str, bbox: Mapping[str, tuple[int, int]]) -> None:
    chip = _chip_section(header, spec, fld)
    if chip is None:
        return
    sec, label = chip
    if (_fwd(sec.x), _fwd(sec.y)) != (bbox["x"], bbox["y"]):
        raise ProfileError(
            f"the amplifiers' {fld.upper()}s cover [{bbox['x'][0]}:{bbox['x'][1]},"
            f"{bbox['y'][0]}:{bbox['y'][1]}] but the chip's {label}"
        )
