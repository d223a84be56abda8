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
from ..sections import Section
from ._layout import Amplifier, ChipLayout

IMAGE_TYPES = ("bias", "dark", "flat", "science", "other")
_HERE = Path(__file__).parent
_KEYWORD_FIELDS = ("imagetyp", "exptime", "filter", "date", "object", "chip", "detsec")
_SATURATE_DEFAULT = {8: 255.0, 16: 65535.0}


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
    def from_dict(cls, doc: dict[str, Any], *, source: str = "<dict>",
                  base: Profile | None = None) -> Profile:
        """Build a profile; keywords and vocabulary not given are taken from ``base``."""
        def fail(msg: str) -> ProfileError:
            return ProfileError(f"{source}: {msg}")

        unknown = set(doc) - {"name", "description", "detect", "keywords", "imagetyp", "rules",
                              "zero_exposure_dark_is_bias", "layout"}
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
        if layout.get("source", "header") not in ("header", "profile"):
            raise fail("layout.source must be 'header' or 'profile'")
        if layout.get("source") == "profile" and not layout.get("amplifiers"):
            raise fail("layout.source = 'profile' needs [[layout.amplifiers]] entries")
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
        )

    # -- header access ------------------------------------------------------------------
    def lookup(self, header: fits.Header, field_name: str) -> Any:
        """The first present, non-empty value among the keywords of ``field_name``, else None."""
        for key in self.keywords.get(field_name, ()):
            if key in header:
                value = header[key]
                if isinstance(value, str):
                    value = value.strip()
                if value not in ("", None) and not isinstance(value, fits.card.Undefined):
                    return value
        return None

    def matches(self, header: fits.Header) -> bool:
        """Whether this profile's ``detect`` conditions hold for ``header`` (never for generic)."""
        if not self.detect:
            return False
        return all(k in header and p.fullmatch(str(header[k]).strip()) for k, p in self.detect)

    def exptime(self, header: fits.Header) -> float | None:
        value = self.lookup(header, "exptime")
        try:
            return None if value is None else float(value)
        except (TypeError, ValueError):
            return None

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
    def chip_layout(self, header: fits.Header, shape: tuple[int, int], *, chip: str,
                    path: object = None, hdu: object = None, bitpix: int | None = None) -> ChipLayout:
        """The amplifier layout of one raw chip of ``shape`` (ny, nx) described by ``header``."""
        try:
            if self.layout.get("source", "header") == "profile":
                amps = self._amps_from_profile(header, shape, bitpix)
            else:
                amps = _amps_from_header(header, shape, bitpix)
            detsec_text = self.lookup(header, "detsec")
            detsec = Section.parse(detsec_text, keyword="DETSEC") if detsec_text else None
            return ChipLayout(chip, tuple(shape), tuple(amps), detsec=detsec)
        except (SectionError, ProfileError) as exc:
            raise ProfileError(f"{where(path, hdu)}{exc}") from exc

    def _amps_from_profile(self, header: fits.Header, shape: tuple[int, int],
                           bitpix: int | None) -> list[Amplifier]:
        specs = self.layout["amplifiers"]
        datasecs = [Section.parse(a["datasec"], keyword=f"datasec of {a.get('name')}").validate(shape)
                    for a in specs]
        origin_y = min(d.normalized().y.start for d in datasecs)
        origin_x = min(d.normalized().x.start for d in datasecs)
        amps = []
        for spec, datasec in zip(specs, datasecs, strict=True):
            ccdsec = (Section.parse(spec["ccdsec"]).resolve(datasec.shape) if "ccdsec" in spec
                      else _shift(datasec, origin_y, origin_x))
            biassec = spec.get("biassec")
            amps.append(Amplifier(
                name=str(spec.get("name", chr(ord("A") + len(amps)))),
                datasec=datasec,
                ccdsec=ccdsec,
                biassec=None if biassec is None else Section.parse(biassec).validate(shape),
                overscan_axis=spec.get("overscan_axis"),
                gain=_number(spec.get("gain", 1.0), header, "gain"),
                rdnoise=_number(spec.get("rdnoise"), header, "rdnoise"),
                saturate=_number(spec.get("saturate", _SATURATE_DEFAULT.get(bitpix)), header, "saturate"),
            ))
        return amps


def _number(value: Any, header: fits.Header, what: str) -> float | None:
    """A number given literally, or by the name of the header keyword that holds it."""
    if value is None:
        return None
    if isinstance(value, str):
        if value not in header:
            raise ProfileError(f"profile takes {what} from keyword {value}, which the header lacks")
        value = header[value]
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{what} value {value!r} is not a number") from exc


def _shift(sec: Section, origin_y: int, origin_x: int) -> Section:
    n = sec.normalized()
    return Section.parse(
        f"[{n.x.start - origin_x + 1}:{n.x.stop - origin_x + 1},"
        f"{n.y.start - origin_y + 1}:{n.y.stop - origin_y + 1}]"
    )


def _first(header: fits.Header, *keys: str) -> Any:
    for k in keys:
        if k in header and header[k] not in ("", None):
            return header[k]
    return None


def _amps_from_header(header: fits.Header, shape: tuple[int, int], bitpix: int | None) -> list[Amplifier]:
    """Generic layout: DATASECA/B... per amplifier, else one amplifier from DATASEC/TRIMSEC."""
    letters = [c for c in "ABCDEFGH" if f"DATASEC{c}" in header]
    default_sat = _first(header, "SATURATE", "SATURATN")
    if default_sat is None:
        default_sat = _SATURATE_DEFAULT.get(bitpix)
    default_gain = _first(header, "GAIN", "EGAIN")
    default_rn = _first(header, "RDNOISE", "READNOIS", "RON")
    specs = []
    if letters:
        for c in letters:
            specs.append(dict(
                name=c,
                datasec=(f"DATASEC{c}", header[f"DATASEC{c}"]),
                biassec=(f"BIASSEC{c}", header.get(f"BIASSEC{c}")),
                gain=_first(header, f"GAIN{c}") or default_gain,
                rdnoise=_first(header, f"RDNOISE{c}", f"RDNOIS{c}") or default_rn,
                saturate=_first(header, f"SATURAT{c}") or default_sat,
            ))
    else:
        data_key = "DATASEC" if "DATASEC" in header else ("TRIMSEC" if "TRIMSEC" in header else None)
        specs.append(dict(
            name="A",
            datasec=(data_key or "image", header[data_key] if data_key else "[*,*]"),
            biassec=("BIASSEC", header.get("BIASSEC")),
            gain=default_gain, rdnoise=default_rn, saturate=default_sat,
        ))
    datasecs = [Section.parse(s["datasec"][1], keyword=s["datasec"][0]).validate(shape, keyword=s["datasec"][0])
                for s in specs]
    if not letters and "TRIMSEC" in header and "DATASEC" in header:
        # TRIMSEC may keep less than DATASEC; it wins for what survives trimming.
        datasecs = [Section.parse(header["TRIMSEC"], keyword="TRIMSEC").validate(shape, keyword="TRIMSEC")]
    origin_y = min(d.normalized().y.start for d in datasecs)
    origin_x = min(d.normalized().x.start for d in datasecs)
    amps = []
    for spec, datasec in zip(specs, datasecs, strict=True):
        bkey, btext = spec["biassec"]
        biassec = Section.parse(btext, keyword=bkey).validate(shape, keyword=bkey) if btext else None
        amps.append(Amplifier(
            name=spec["name"],
            datasec=datasec,
            ccdsec=_shift(datasec, origin_y, origin_x),
            biassec=biassec,
            gain=float(spec["gain"]) if spec["gain"] is not None else 1.0,
            rdnoise=float(spec["rdnoise"]) if spec["rdnoise"] is not None else None,
            saturate=float(spec["saturate"]) if spec["saturate"] is not None else None,
        ))
    return amps


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
