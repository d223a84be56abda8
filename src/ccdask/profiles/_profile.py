"""Loading, validating and applying instrument profiles."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from astropy.io import fits

from ..errors import ProfileError, SectionError, where
from ._layout import ChipLayout
from ._resolve import LayoutExplanation, LayoutSpec, parse_layout, resolve, resolve_explained

IMAGE_TYPES = ("bias", "dark", "flat", "science", "other")
_HERE = Path(__file__).parent
_KEYWORD_FIELDS = ("imagetyp", "exptime", "filter", "date", "object", "chip", "detsec")


def _norm(value: object) -> str:
    """Vocabulary form of a header value: lower case, no spaces, dashes or underscores."""
    return re.sub(r"[\s_\-]+", "", str(value).strip().lower())


@dataclass(frozen=True)
class Rule:
    """``imagetyp`` (and ``label``) when every ``when`` regex matches and no ``unless`` regex does."""

    imagetyp: str
    label: str
    when: tuple[tuple[str, re.Pattern], ...]
    unless: tuple[tuple[str, re.Pattern], ...] = ()

    def applies(self, header: fits.Header) -> bool:
        def hit(key: str, pattern: re.Pattern) -> bool:
            return key in header and pattern.fullmatch(str(header[key]).strip()) is not None

        return all(hit(k, p) for k, p in self.when) and not any(hit(k, p) for k, p in self.unless)


@dataclass(frozen=True)
class Classification:
    """The normalised image type of a frame, a finer label (``arc``, ``standard``...) and why."""

    imagetyp: str
    label: str
    reason: str


@dataclass(frozen=True)
class Detection:
    """Whether a profile's ``[detect]`` block matches a header, and why.

    ``conditions`` holds one ``(keyword, pattern, value, hit)`` per condition: the header's
    value (None when the keyword is missing) and whether the pattern matches it in full.
    """

    profile: str
    matched: bool
    conditions: tuple[tuple[str, str, Any, bool], ...]
    reason: str


@dataclass(frozen=True)
class Profile:
    """A parsed instrument profile (see the shipped TOML files for the documented schema)."""

    name: str
    description: str
    source: str
    detect: tuple[tuple[str, re.Pattern], ...]
    keywords: dict[str, tuple[str, ...]]
    vocabulary: dict[str, str]
    rules: tuple[Rule, ...]
    zero_exposure_dark_is_bias: bool
    layout: dict[str, Any] = field(default_factory=dict)
    layout_spec: LayoutSpec = field(default_factory=LayoutSpec)
    #: the ``[crosstalk]`` table as checked here: ``("file", path)`` or ``("terms", [...])``;
    #: ``ccdask.calibrate._crosstalk.profile_crosstalk`` parses it (the profiles layer knows
    #: nothing of the correction, and cataloguing, which loads every profile, imports no dask)
    crosstalk_spec: Any = None
    #: whether a night corrects with them (``[crosstalk] apply``; ``crosstalk.file`` and
    #: ``crosstalk.profile = false`` in the configuration override it)
    crosstalk_apply: bool = False

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_toml(cls, path: str | Path, *, base: Profile | None = None) -> Profile:
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ProfileError(f"{path}: cannot read instrument profile: {exc}") from exc
        return cls.from_dict(doc, source=str(path), base=base)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], *, source: str = "<dict>", base: Profile | None = None) -> Profile:
        """Build a profile; keywords and vocabulary not given are taken from ``base``."""

        def fail(msg: str) -> ProfileError:
            return ProfileError(f"{source}: {msg}")

        unknown = set(doc) - {
            "name",
            "description",
            "detect",
            "keywords",
            "imagetyp",
            "rules",
            "zero_exposure_dark_is_bias",
            "layout",
            "crosstalk",
        }
        if unknown:
            raise fail(f"unknown top-level entries {sorted(unknown)}")
        if "name" not in doc:
            raise fail("a profile needs a name")
        keywords = dict(base.keywords) if base else {}
        for k, v in doc.get("keywords", {}).items():
            if k not in _KEYWORD_FIELDS:
                raise fail(f"unknown keyword field {k!r} (known: {', '.join(_KEYWORD_FIELDS)})")
            keywords[k] = (v,) if isinstance(v, str) else tuple(v)
        vocabulary: dict[str, str] = dict(base.vocabulary) if base else {}
        for typ, values in doc.get("imagetyp", {}).items():
            if typ not in IMAGE_TYPES:
                raise fail(f"imagetyp table names {typ!r}; types are {', '.join(IMAGE_TYPES)}")
            for v in values:
                vocabulary[_norm(v)] = typ
        rules = []
        for i, r in enumerate(doc.get("rules", [])):
            typ = r.get("imagetyp")
            if typ not in IMAGE_TYPES:
                raise fail(f"rule {i + 1}: imagetyp must be one of {', '.join(IMAGE_TYPES)}")
            try:
                when = tuple((k, re.compile(p, re.I)) for k, p in r.get("when", {}).items())
                unless = tuple((k, re.compile(p, re.I)) for k, p in r.get("unless", {}).items())
            except re.error as exc:
                raise fail(f"rule {i + 1}: bad regular expression: {exc}") from exc
            if not when:
                raise fail(f"rule {i + 1}: needs at least one 'when' condition")
            rules.append(Rule(typ, r.get("label", typ), when, unless))
        detect = tuple((k, re.compile(p, re.I)) for k, p in doc.get("detect", {}).items())
        layout = dict(doc.get("layout", {"source": "header"}))
        layout_spec = parse_layout(layout, base=base.layout_spec if base else None, fail=fail)
        crosstalk_spec, apply = _profile_crosstalk(doc.get("crosstalk"), source, fail)
        return cls(
            name=doc["name"],
            description=doc.get("description", ""),
            source=source,
            detect=detect,
            keywords=keywords,
            vocabulary=vocabulary,
            rules=tuple(rules),
            zero_exposure_dark_is_bias=bool(doc.get("zero_exposure_dark_is_bias", True)),
            layout=layout,
            layout_spec=layout_spec,
            crosstalk_spec=crosstalk_spec,
            crosstalk_apply=apply,
        )

    # -- header access ------------------------------------------------------------------
    def lookup(self, header: fits.Header, field_name: str) -> Any:
        """The first present, non-empty value among the keywords of ``field_name``, else None.

        An entry with braces composes a value from several keywords, e.g. ``"{LSST_NUM}_{EXTNAME}"``
        (present when all of them are).
        """
        found = self.lookup_entry(header, field_name)
        return None if found is None else found[0]

    def lookup_entry(self, header: fits.Header, field_name: str) -> tuple[Any, str] | None:
        """:meth:`lookup`'s value and the ``[keywords]`` entry that gave it, or None."""
        for key in self.keywords.get(field_name, ()):
            if "{" in key:
                value = _compose(header, key)
                if value is not None:
                    return value, key
                continue
            if key in header:
                value = header[key]
                if isinstance(value, str):
                    value = value.strip()
                if value not in ("", None) and not isinstance(value, fits.card.Undefined):
                    return value, key
        return None

    def matches(self, header: fits.Header) -> bool:
        """Whether this profile's ``detect`` conditions hold for ``header`` (never for generic)."""
        if not self.detect:
            return False
        return all(k in header and p.fullmatch(str(header[k]).strip()) for k, p in self.detect)

    def explain_detection(self, header: fits.Header) -> Detection:
        """Each ``[detect]`` condition against ``header``; ``matched`` is :meth:`matches`."""
        conditions = []
        for k, p in self.detect:
            present = k in header
            hit = present and p.fullmatch(str(header[k]).strip()) is not None
            value = header[k] if present else None
            conditions.append((k, p.pattern, value.strip() if isinstance(value, str) else value, hit))
        matched = bool(conditions) and all(c[3] for c in conditions)
        if not conditions:
            reason = f"{self.name} has no [detect] block"
        elif matched:
            reason = " and ".join(f"{k} = {v!r} matches {p!r}" for k, p, v, _ in conditions)
        else:
            k, p, v, _ = next(c for c in conditions if not c[3])
            reason = f"{k} is missing" if v is None else f"{k} = {v!r} does not match {p!r}"
        return Detection(self.name, matched, tuple(conditions), reason)

    def exptime(self, header: fits.Header) -> float | None:
        value = self.lookup(header, "exptime")
        try:
            return None if value is None else float(value)
        except (TypeError, ValueError):
            return None

    def vocabulary_type(self, value: object) -> str | None:
        """The image type this profile's vocabulary gives a header value, or None if not in it."""
        return self.vocabulary.get(_norm(value))

    def classify(self, header: fits.Header) -> Classification:
        """Normalise the image type: profile rules first, then the vocabulary."""
        for rule in self.rules:
            if rule.applies(header):
                conds = ", ".join(f"{k}~{p.pattern}" for k, p in rule.when)
                return Classification(rule.imagetyp, rule.label, f"rule ({conds})")
        raw = self.lookup(header, "imagetyp")
        if raw is None:
            keys = "/".join(self.keywords["imagetyp"])
            return Classification("other", "unknown", f"no {keys} keyword")
        typ = self.vocabulary.get(_norm(raw))
        if typ is None:
            return Classification("other", _norm(raw) or "unknown", f"unknown image type {raw!r}")
        if typ == "dark" and self.zero_exposure_dark_is_bias and self.exptime(header) == 0.0:
            return Classification("bias", "bias", f"{raw!r} with zero exposure time")
        # a flat keeps its normalised header value as label ("domeflat", "skyflat", "flat"...):
        # flat.illumination tells dome from twilight/sky flats by it
        return Classification(typ, _norm(raw) if typ == "flat" else typ, f"{raw!r}")

    # -- amplifier layout ---------------------------------------------------------------
    def chip_layout(
        self,
        header: fits.Header,
        shape: tuple[int, int],
        *,
        chip: str,
        path: object = None,
        hdu: object = None,
        bitpix: int | None = None,
    ) -> ChipLayout:
        """The amplifier layout of one raw chip of ``shape`` (ny, nx) described by ``header``.

        The rules (see ``docs/profiles.md`` and :mod:`ccdask.profiles._resolve`) are the same for
        every profile; the profile's ``[layout]`` table says where the facts are found. Errors
        name the file, the extension and the keywords and values involved.
        """
        try:
            return resolve(
                self.layout_spec, header, shape, chip=chip, bitpix=bitpix, detsec_keys=self.keywords.get("detsec", ())
            )
        except (SectionError, ProfileError) as exc:
            raise ProfileError(f"{where(path, hdu)}{exc}") from exc

    def explain_layout(
        self,
        header: fits.Header,
        shape: tuple[int, int],
        *,
        chip: str,
        path: object = None,
        hdu: object = None,
        bitpix: int | None = None,
    ) -> tuple[ChipLayout, LayoutExplanation]:
        """:meth:`chip_layout` and where each of its facts came from (see ``resolve_explained``)."""
        try:
            return resolve_explained(
                self.layout_spec, header, shape, chip=chip, bitpix=bitpix, detsec_keys=self.keywords.get("detsec", ())
            )
        except (SectionError, ProfileError) as exc:
            raise ProfileError(f"{where(path, hdu)}{exc}") from exc


def _profile_crosstalk(value: Any, source: str, fail: Any) -> tuple[Any, bool]:
    """A profile's ``[crosstalk]`` table checked: ``apply`` (default false), and either ``file``
    (a coefficient file, relative to the profile's own) or ``[[crosstalk.terms]]`` (the terms
    inline, as a coefficient file's ``[[crosstalk]]`` tables). Returns ``(("file", path) or
    ("terms", list), apply)``; the terms are parsed by ``calibrate._crosstalk.profile_crosstalk``."""
    if value is None:
        return None, False
    if not isinstance(value, dict):
        raise fail("crosstalk must be a table ([crosstalk] with apply, and file or [[crosstalk.terms]])")
    unknown = set(value) - {"apply", "file", "terms"}
    if unknown:
        raise fail(f"[crosstalk]: unknown keys {sorted(unknown)} (known: apply, file, terms)")
    apply = value.get("apply", False)
    if not isinstance(apply, bool):
        raise fail(f"[crosstalk]: apply must be true or false, got {apply!r}")
    if ("file" in value) == ("terms" in value):
        raise fail("[crosstalk]: give either file (a coefficient file) or [[crosstalk.terms]], not both or neither")
    if "file" in value:
        if not isinstance(value["file"], str):
            raise fail(f"[crosstalk]: file must be a path, got {value['file']!r}")
        path = Path(value["file"])
        if not path.is_absolute():
            path = Path(source).parent / path
        if not path.is_file():
            raise fail(f"[crosstalk]: no coefficient file {path}")
        return ("file", str(path)), apply
    if not isinstance(value["terms"], list):
        raise fail("[crosstalk]: terms must be a list of tables ([[crosstalk.terms]])")
    return ("terms", value["terms"]), apply


def _compose(header: fits.Header, template: str) -> str | None:
    """``template`` with each ``{KEYWORD}`` replaced by the header's stripped value, or None."""
    parts = re.split(r"\{([^{}]+)\}", template)
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(part)
            continue
        value = header.get(part) if part in header else None
        if value is None or isinstance(value, fits.card.Undefined) or str(value).strip() == "":
            return None
        out.append(str(value).strip())
    return "".join(out)


@cache
def _shipped(name: str) -> Profile:
    base = None if name == "generic" else _shipped("generic")
    return Profile.from_toml(_HERE / f"{name}.toml", base=base)


def available_profiles() -> list[str]:
    """Names of the profiles shipped with ccdask."""
    return sorted(p.stem for p in _HERE.glob("*.toml"))


def load_profile(name_or_path: str | Path | Profile | None = None) -> Profile:
    """A shipped profile by name (``generic`` when None), a TOML file by path, or a Profile as is."""
    if isinstance(name_or_path, Profile):
        return name_or_path
    if name_or_path is None:
        return _shipped("generic")
    text = str(name_or_path)
    if text in available_profiles():
        return _shipped(text)
    path = Path(text)
    if path.suffix == ".toml" and path.exists():
        return Profile.from_toml(path, base=_shipped("generic"))
    raise ProfileError(
        f"no instrument profile {text!r}: use one of {', '.join(available_profiles())} or a path to a .toml file"
    )


def detect_profile(header: fits.Header) -> Profile:
    """The first shipped profile whose ``detect`` block matches, else ``generic``."""
    for name in available_profiles():
        prof = _shipped(name)
        if prof.matches(header):
            return prof
    return _shipped("generic")


def detect_profile_explained(header: fits.Header) -> tuple[Profile, Detection | None]:
    """:func:`detect_profile`'s choice and the detection that chose it (None: generic, nothing matched)."""
    for name in available_profiles():
        prof = _shipped(name)
        detection = prof.explain_detection(header)
        if detection.matched:
            return prof, detection
    return _shipped("generic"), None
