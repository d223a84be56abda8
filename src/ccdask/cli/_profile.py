"""``ccdask profile init FILE``: a starting instrument profile (TOML) from a raw file's headers.

The profile written holds what ccdask found in the file, each entry commented with where it
came from: a name and description; a ``[detect]`` block from the file's ``INSTRUME`` and
``DETECTOR`` (else ``TELESCOP``, ``CAMERA`` or ``VERSION``) values; per header field
(``imagetyp``, ``exptime``, ``filter``...) the keyword that gave it; the image type values seen,
under the type the vocabulary gives them; the classification rules of the profile that was
detected, if any; and the layout, written out as ``[layout] source = "profile"`` with one
``[[layout.amplifiers]]`` entry per amplifier (gain, read noise and saturation as the header
keyword they came from, else as numbers).

Before anything is written the profile is loaded back and applied to every chip of the file: it
must give the layout the file gives now. Where an explicit amplifier list cannot (chips of one
file laid out differently, or a chip placed by its DETSEC, which also turns the chip's DETSEC
forward), the layout is left to the header (``source = "header"``, with the detected profile's
keyword families) and the inferred amplifiers are kept as comments. An existing file is never
replaced unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from ..catalog import strip_fits_suffix
from ..errors import ConfigError, FitsReadError, ProfileError
from ..profiles import Profile, load_profile
from ..utils import atomic_path
from ._inspect import ChipReport, inspect_files

__all__ = ["profile_toml", "register", "run"]

#: Keywords naming the instrument, tried for ``[detect]``: both of these when present...
IDENTITY_KEYWORDS = ("INSTRUME", "DETECTOR")
#: ...else the first of these.
FALLBACK_IDENTITY = ("TELESCOP", "CAMERA", "VERSION")
FIELDS = ("imagetyp", "exptime", "filter", "date", "object", "chip", "detsec")
COMMENT_AT = 44  # the column where trailing comments start


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``profile`` command (with ``init``) to a ``ccdask`` subparsers object."""
    parser = subparsers.add_parser("profile", help="write a starting instrument profile from a raw file")
    actions = parser.add_subparsers(dest="profile_command", required=True, metavar="ACTION")
    p = actions.add_parser(
        "init",
        help="write a starting profile TOML from a raw file's headers",
        description="Write a starting instrument profile from FILE's headers: [detect], the keywords "
        "found for each field, the image type values seen, and the layout ccdask infers, written out "
        "per amplifier and commented with where each value came from. The profile is checked to give "
        "FILE the layout it has now before it is written.",
    )
    p.add_argument("file", metavar="FILE", help="a raw FITS file of the camera")
    p.add_argument("-o", "--output", metavar="PROFILE.toml", help="where to write it (default: NAME.toml here)")
    p.add_argument("--name", help="the profile's name (default: from INSTRUME/DETECTOR, else the file name)")
    p.add_argument("--overwrite", action="store_true", help="replace PROFILE.toml if it exists")
    parser.set_defaults(func=run)
    return parser


# -- TOML text -----------------------------------------------------------------------------------


def _str(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text, ensure_ascii=False)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _str(key)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return _str(v)
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def _entry(key: str, value: Any, comment: object = "") -> str:
    text = f"{_key(key)} = {_value(value)}"
    return f"{text:<{COMMENT_AT}} # {_flat(_short(comment))}" if comment else text


def _short(comment: object) -> object:
    """An origin with many keywords (an ESO port) as its detail and the keyword names only."""
    keywords = getattr(comment, "keywords", ())
    if len(keywords) > 3:
        return f"{comment.detail}: " + ", ".join(k for k, _ in keywords)  # type: ignore[attr-defined]
    return comment


def _flat(text: object) -> str:
    return " ".join(str(text).split())


def _card(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else str(value)


def _literal_pattern(value: str) -> str:
    """A regular expression matching ``value`` itself (only the special characters escaped)."""
    return re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", value)


# -- the parts of the profile --------------------------------------------------------------------


def _identity_header(reports: Sequence[ChipReport]) -> Any:
    """The header naming the instrument: the primary HDU's own cards (an extension's merged
    header also has cards of that one chip, like DECam's DETECTOR)."""
    from astropy.io import fits

    first = reports[0].entry
    if first.hdu == 0:
        return first.header
    return fits.getheader(first.path, 0)


def _detect(reports: Sequence[ChipReport]) -> dict[str, str]:
    header = _identity_header(reports)

    def text(key: str) -> str:
        return str(header[key]).strip() if key in header else ""

    keys = [k for k in IDENTITY_KEYWORDS if text(k)] or [k for k in FALLBACK_IDENTITY if text(k)][:1]
    out = {}
    for k in keys:
        value = text(k)
        if all(k in r.entry.header and str(r.entry.header[k]).strip() == value for r in reports):
            out[k] = value
    return out


def _keywords(reports: Sequence[ChipReport], generic: Profile) -> list[str]:
    lines = ["[keywords]", "# for each field, the keyword that gave its value in this file (first present wins)"]
    for fld in FIELDS:
        winners: list[str] = []
        shown = ""
        for r in reports:
            found = r.profile.lookup_entry(r.entry.header, fld)
            if found is None:
                continue
            value, entry = found
            if entry not in winners:
                winners.append(entry)
            if not shown:
                shown = f"{entry} = {_card(value)}" if "{" not in entry else f"{entry} gives {_card(value)}"
        ours = reports[0].profile.keywords.get(fld, ())
        if winners:
            ordered = [k for k in ours if k in winners] + [k for k in winners if k not in ours]
            more = " (and others on other chips)" if len(reports) > 1 and len(ordered) > 1 else ""
            lines.append(_entry(fld, ordered, shown + more))
        elif tuple(ours) != tuple(generic.keywords.get(fld, ())):
            lines.append(_entry(fld, list(ours), f"none of these is in the file: profile {reports[0].profile.name}'s"))
        else:
            lines.append(f"# {fld}: none of {', '.join(ours)} is in the file (generic's list applies)")
    return lines


def _imagetyp(reports: Sequence[ChipReport]) -> list[str]:
    seen: dict[str, list[str]] = {}
    unknown: list[str] = []
    keys = []
    for r in reports:
        found = r.profile.lookup_entry(r.entry.header, "imagetyp")
        if found is None:
            continue
        value, key = str(found[0]), found[1]
        keys.append(key)
        typ = r.profile.vocabulary_type(value)
        target = unknown if typ is None else seen.setdefault(typ, [])
        if value not in target:
            target.append(value)
    lines = ["[imagetyp]"]
    if not keys:
        lines.append('# no image type keyword in this file: add the values your camera writes, e.g. bias = ["zero"]')
        return lines
    lines.append(
        f"# the values of {'/'.join(dict.fromkeys(keys))} in this file, under the type the vocabulary gives them"
    )
    for typ, values in seen.items():
        lines.append(_entry(typ, values, f"profile {reports[0].profile.name}'s vocabulary: {typ}"))
    for value in unknown:
        lines.append(
            f"# {value!r} is in no type's list (frames with it are 'other'): add it to one, e.g. other = [{_str(value)}]"
        )
    return lines


def _rules(prof: Profile, classifications: Iterable[str]) -> list[str]:
    if not prof.rules:
        return []
    lines = [
        f"# the rules of profile {prof.name} (this file: {'; '.join(dict.fromkeys(classifications))})",
    ]
    for rule in prof.rules:
        lines += ["", "[[rules]]", _entry("imagetyp", rule.imagetyp), _entry("label", rule.label)]
        lines.append(_entry("when", {k: p.pattern for k, p in rule.when}))
        if rule.unless:
            lines.append(_entry("unless", {k: p.pattern for k, p in rule.unless}))
    return lines


def _number(fld: str, value: float | None, origin: Any, unknown: str) -> str:
    if value is None:
        return f"# {fld}: {unknown} ({_flat(origin)})"
    if origin.kind == "header" and len(origin.keywords) == 1:
        return _entry(fld, origin.keywords[0][0], origin)
    return _entry(fld, float(value), origin)


def _amplifiers(r: ChipReport) -> list[str]:
    """The ``[[layout.amplifiers]]`` entries reproducing chip ``r``'s layout, commented."""
    lines = []
    ex = r.explanation
    for amp, aex in zip(r.layout.amplifiers, ex.amplifiers, strict=True):
        o = aex.origins
        data = str(o["datasec"]) + (f"; trimmed by {o['trimsec']}" if "trimsec" in o else "")
        lines += ["", "[[layout.amplifiers]]", _entry("name", amp.name), _entry("datasec", str(amp.datasec), data)]
        if amp.biassec is not None:
            lines.append(_entry("biassec", str(amp.biassec), o["biassec"]))
            lines.append(_entry("overscan_axis", amp.overscan_axis, o.get("overscan_axis", "")))
        if amp.parallel_biassec is not None:
            lines.append(_entry("parallel_biassec", str(amp.parallel_biassec), o["parallel_biassec"]))
            lines.append(_entry("overscan_order", amp.overscan_order, o.get("overscan_order", "")))
        lines.append(_entry("ccdsec", str(amp.ccdsec), f"placed by rule {ex.rule}: {o['ccdsec']}"))
        lines.append(_number("gain", amp.gain, o["gain"], "unknown"))
        lines.append(_number("rdnoise", amp.rdnoise, o["rdnoise"], "unknown: set it, or measure it (read_noise)"))
        lines.append(_number("saturate", amp.saturate, o["saturate"], "unknown"))
    return lines


def _header_layout(prof: Profile, reason: str, example: ChipReport) -> list[str]:
    lines = [
        "[layout]",
        f"# an explicit [[layout.amplifiers]] list cannot give this file its layout: {reason};",
        f"# the amplifiers are read from each chip's header, with the keyword families of profile {prof.name}",
        _entry("source", "header"),
    ]
    tables = []
    if prof.name != "generic":
        for key, value in prof.layout.items():
            if key in ("source", "amplifiers"):
                continue
            if isinstance(value, Mapping):
                tables += ["", f"[layout.{key}]", *(_entry(k, v) for k, v in value.items())]
            else:
                lines.append(_entry(key, value))
    e = example.entry
    lines += tables
    lines += ["", f"# what ccdask makes of HDU {e.hdu} (chip {e.chip}), written out:"]
    lines += [f"# {line}" if line else "#" for line in _amplifiers(example)]
    return lines


def profile_toml(reports: Sequence[ChipReport], *, name: str, explicit: bool = True) -> str:
    """The text of a starting profile for the chips of one file (see the module docstring).

    With ``explicit`` the layout is written as ``[[layout.amplifiers]]`` (the first chip's);
    otherwise it is left to the header.
    """
    first = reports[0]
    e, prof = first.entry, first.profile
    generic = load_profile("generic")
    detect = _detect(reports)
    namps = first.layout.namps
    who = " ".join(detect.values()) or strip_fits_suffix(Path(e.path).name)
    description = (
        f"{who}: {len(reports)} chip(s) per file, {first.layout.describe()} "
        f"(ccdask profile init, from {Path(e.path).name})"
    )
    lines = [
        f"# A starting instrument profile written by `ccdask profile init` (ccdask {__version__}) from",
        f"# {e.path}: {len(reports)} chip(s); ccdask chose profile {prof.name} ({_flat(first.why)}).",
        "# Check it with `ccdask inspect FILE --profile THIS.toml`; use it with `ccdask catalog --profile",
        '# THIS.toml` or `profile = "THIS.toml"` in a reduction configuration. Schema: docs/profiles.md.',
        "",
        _entry("name", name),
        _entry("description", description),
    ]
    if not prof.zero_exposure_dark_is_bias:
        lines.append(_entry("zero_exposure_dark_is_bias", False, f"as profile {prof.name}"))
    lines += ["", "[detect]"]
    if detect:
        lines.append("# the file's instrument keywords (regular expressions, matched in full ignoring case);")
        lines.append(
            "# used only for profiles shipped with ccdask: name your own with --profile or in the configuration"
        )
        lines += [_entry(k, _literal_pattern(v), f"{k} = {_card(v)}") for k, v in detect.items()]
    else:
        lines.append("# no INSTRUME, DETECTOR, TELESCOP, CAMERA or VERSION keyword to detect this camera by")
    lines += ["", *_keywords(reports, generic), "", *_imagetyp(reports)]
    if prof.rules:
        cls = (f"{c.imagetyp}/{c.label} by {c.reason}" for c in (r.profile.classify(r.entry.header) for r in reports))
        lines += ["", *_rules(prof, cls)]
    lines.append("")
    if explicit:
        lines += [
            "[layout]",
            f"# HDU {e.hdu} (chip {e.chip}): {namps} amplifier(s) from {first.explanation.amplifiers_from};",
            f"# placed by rule {first.explanation.rule_number} {first.explanation.rule}: "
            f"{first.explanation.rule_reason}",
            _entry("source", "profile"),
            *_amplifiers(first),
        ]
    else:
        lines += _header_layout(prof, _why_not_explicit(reports), first)
    return "\n".join(lines) + "\n"


def _same_amplifiers(reports: Sequence[ChipReport]) -> bool:
    first = reports[0].layout
    return all(r.layout.raw_shape == first.raw_shape and r.layout.amplifiers == first.amplifiers for r in reports)


def _why_not_explicit(reports: Sequence[ChipReport]) -> str:
    if not _same_amplifiers(reports):
        return f"its {len(reports)} chips are laid out differently"
    if any(r.explanation.rule == "DETSEC" for r in reports):
        return "its chips are placed by DETSEC (rule 2), which also turns the chip's DETSEC forward"
    return "the explicit layout gives another chip layout"


def _mismatches(text: str, reports: Sequence[ChipReport], source: str) -> list[str]:
    """The chips for which the profile ``text`` gives another layout than the one found."""
    prof = Profile.from_dict(tomllib.loads(text), source=source, base=load_profile("generic"))
    bad = []
    for r in reports:
        e = r.entry
        bitpix = e.info.bitpix if e.info is not None else None
        try:
            got = prof.chip_layout(e.header, e.shape, chip=e.chip, path=e.path, hdu=e.hdu, bitpix=bitpix)
        except ProfileError as exc:
            bad.append(f"HDU {e.hdu}: {exc}")
            continue
        if got != r.layout:
            bad.append(f"HDU {e.hdu} ({e.chip})")
    return bad


def _default_name(reports: Sequence[ChipReport]) -> str:
    detect = _detect(reports)
    base = next(iter(detect.values()), "") or strip_fits_suffix(Path(reports[0].entry.path).name)
    return re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_") or "mycam"


def run(args: argparse.Namespace) -> int:
    """Execute ``ccdask profile init``: write the profile, print where; 0 on success."""
    reports, problems = inspect_files([args.file])
    if problems:
        raise ProfileError("cannot write a profile: " + "; ".join(" ".join(str(p).split()) for p in problems))
    if not reports:
        raise FitsReadError(f"{args.file}: no image to write a profile from")
    name = args.name or _default_name(reports)
    out = Path(args.output or f"{name}.toml")
    if out.suffix != ".toml":
        raise ConfigError(f"{out}: a profile file must end in .toml (load_profile reads paths ending in .toml)")
    text = profile_toml(reports, name=name, explicit=True)
    explicit = not _mismatches(text, reports, str(out))
    if not explicit:
        text = profile_toml(reports, name=name, explicit=False)
        bad = _mismatches(text, reports, str(out))
        if bad:  # the resolver applied to the same header and families must agree with itself
            raise ProfileError(f"{args.file}: the profile written would lay out {', '.join(bad)} differently")
    with atomic_path(out, overwrite=args.overwrite) as tmp:
        tmp.write_text(text)
    first = reports[0]
    how = "written out per amplifier" if explicit else "left to the header (see the comments)"
    print(
        f"wrote {out}: profile {name!r} from {args.file}, {len(reports)} chip(s), "
        f"{first.layout.namps} amplifier(s), layout {how}"
    )
    print(f"check it: ccdask inspect {args.file} --profile {out}")
    return 0
