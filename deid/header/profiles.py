"""Rule profiles: load the TOML files in rules/, compose them and compile a lookup.

A profile file holds a ``[profile]`` table and ``[[rule]]`` entries. ``extends`` names the
profile it builds on and ``options`` the PS3.15 options in force; the options' rows override
the base, and the profile's own rules override both. A rule matches one of:

* ``tag = "(gggg,eeee)"`` (also the repeating groups ``(50xx,xxxx)`` and ``(60xx,eeee)``),
* ``keyword = "PatientName"``,
* ``vr = "PN"`` (attributes the tables do not list),
* ``private_creator = "ACME 1.0"`` with optional ``element = "xx10"`` offset.

Actions are the PS3.15 codes (Table E.1-1a): ``D Z X K C U`` and the compound ``Z/D X/Z X/D
X/Z/D X/Z/U*``.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from deid.codes import CodedConcept
from deid.shipped import rules_dir

#: The action codes of Table E.1-1a.
ACTION_CODES = frozenset({"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"})

#: The options, in the order of Table E.1-1.
OPTIONS = (
    "retain_safe_private",
    "retain_uids",
    "retain_device_identity",
    "retain_institution_identity",
    "retain_patient_characteristics",
    "retain_long_full_dates",
    "retain_long_modified_dates",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
)

#: The keys a profile file may hold: its tables, the ``[profile]`` keys and the ``[[rule]]`` keys.
FILE_KEYS = frozenset({"profile", "rule"})
PROFILE_KEYS = frozenset(
    {"name", "description", "extends", "options", "private_tables", "code_value", "coding_scheme", "code_meaning",
     "hipaa_age_cap"}
)
RULE_KEYS = frozenset({"tag", "keyword", "vr", "private_creator", "element", "action", "name", "in_std_comp_iod"})
#: The CID 7050 code of the Basic Application Confidentiality Profile.
BASIC_PROFILE_CODE = "113100"

#: Rules, in the form of Table E.1-1's rows, for identifying attributes the table does not list.
OUTSIDE_TABLE = "outside-e1-1.toml"

#: Table E.1-1's row for all private attributes.
PRIVATE_ROW = "(gggg,eeee)"

_TAG = re.compile(r"^\(([0-9A-Fa-fx]{4}),([0-9A-Fa-fx]{4})\)$")


class ProfileError(ValueError):
    """A profile file is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Rule:
    """One rule: what it matches, its action and where it came from."""

    action: str
    source: str
    name: str = ""
    tag: str | None = None
    keyword: str | None = None
    vr: str | None = None
    private_creator: str | None = None
    element: int | None = None
    site: bool = False  # a site profile's own rule, not a row of the standard


@dataclass
class Profile:
    """A compiled profile: rule lookups by tag, pattern, VR and private creator.

    Attributes
    ----------
    name
        Profile name.
    options
        The PS3.15 options in force.
    codes
        CID 7050 codes for the profile and each option, in claim order.
    tags
        Exact tag to rule.
    masks
        ``(mask, value, rule)`` triples for repeating groups.
    by_vr
        Site rules by VR; they override the tables, and a site rule by tag overrides them.
    private
        Site rules by ``(creator, element offset or None)``.
    safe_private
        ``(creator, group, element offset)`` of private attributes known to be safe.
    private_table
        ``(creator, group, element offset)`` to action, from the profile's ``private_tables``
        (the TCIA private-tag knowledge base for ``research``); consulted under Retain Safe Private.
    sr_concepts
        ``(coding scheme, code value)`` to action for Clean Structured Content.
    description
        The profile's own one-line description.
    weakened
        Why the Basic profile (CID 7050 113100) is not claimed: the site rules that keep what
        Basic and the options remove, one phrase each; empty when it is claimed.
    private_vrs
        ``(creator, group, element offset)`` to VR, from Table E.3.10-1 and the private tables:
        how a private element stored as UN is read (when neither the object nor pydicom knows).
    hipaa_age_cap
        Write ``090Y`` for a kept Patient's Age over 89 years (``[profile] hipaa_age_cap``,
        default true; a site profile may set it to false).
    """

    name: str
    options: tuple[str, ...]
    codes: tuple[CodedConcept, ...]
    tags: dict[int, Rule] = field(default_factory=dict)
    masks: list[tuple[int, int, Rule]] = field(default_factory=list)
    by_vr: dict[str, Rule] = field(default_factory=dict)
    private: dict[tuple[str, int | None], Rule] = field(default_factory=dict)
    safe_private: frozenset[tuple[str, int, int]] = frozenset()
    private_table: dict[tuple[str, int, int], str] = field(default_factory=dict)
    sr_concepts: dict[tuple[str, str], str] = field(default_factory=dict)
    weakened: tuple[str, ...] = ()
    description: str = ""
    private_vrs: dict[tuple[str, int, int], str] = field(default_factory=dict)
    hipaa_age_cap: bool = True

    @property
    def date_option(self) -> str | None:
        """``"full"``, ``"modified"`` or ``None``: how longitudinal dates are kept."""
        if "retain_long_full_dates" in self.options:
            return "full"
        if "retain_long_modified_dates" in self.options:
            return "modified"
        return None

    def has(self, option: str) -> bool:
        """Return whether ``option`` is in force."""
        return option in self.options

    def rule_for_tag(self, tag: int) -> Rule | None:
        """Return the rule naming ``tag`` exactly or by repeating-group pattern."""
        rule = self.tags.get(tag)
        if rule is not None:
            return rule
        for mask, value, pattern_rule in self.masks:
            if tag & mask == value:
                return pattern_rule
        return None

    def rules(self) -> list[Rule]:
        """Every rule in force, for display."""
        listed = list(self.tags.values()) + [r for _, _, r in self.masks]
        return listed + list(self.by_vr.values()) + list(self.private.values())


def parse_tag(text: str) -> tuple[int, int] | int:
    """Parse ``(gggg,eeee)``; return the tag, or ``(mask, value)`` for an ``xx`` pattern.

    Raises
    ------
    ProfileError
        If ``text`` is not a tag.
    """
    match = _TAG.match(text.strip())
    if not match:
        raise ProfileError(f"not a tag: {text!r}")
    hex_text = (match[1] + match[2]).upper()
    if "X" not in hex_text:
        return int(hex_text, 16)
    mask = int("".join("0" if c == "X" else "F" for c in hex_text), 16)
    value = int(hex_text.replace("X", "0"), 16)
    return mask, value


def _read(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ProfileError(f"no such profile file: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: {exc}") from exc


def _resolve_path(name_or_path: str, base: Path | None = None) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml":
        if not candidate.is_absolute() and base is not None and not candidate.exists():
            candidate = base / candidate
        return candidate
    path = rules_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        raise ProfileError(
            f"unknown profile {name_or_path!r}{_suggest(name_or_path, shipped_profiles())}; shipped profiles: "
            f"{', '.join(shipped_profiles())}, or the path of a site profile (.toml)"
        )
    return path


def _suggest(word: str, known: list[str] | tuple[str, ...] | frozenset[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``known``, or ``""``."""
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_keys(path: Path, data: dict) -> None:
    """Refuse keys a profile file may not hold (a misspelt key would otherwise be ignored).

    Raises
    ------
    ProfileError
        Naming the first unknown key, where it is and the closest known key.
    """
    places: list[tuple[str, object, frozenset[str]]] = [("the file", data, FILE_KEYS)]
    places.append(("[profile]", data.get("profile", {}), PROFILE_KEYS))
    rules = data.get("rule", [])
    places += [(f"[[rule]] number {n}", entry, RULE_KEYS) for n, entry in enumerate(rules, 1)]
    for where, table, known in places:
        if not isinstance(table, dict):
            raise ProfileError(f"{path}: {where} is not a table")
        for key in table:
            if key not in known:
                raise ProfileError(f"{path}: unknown key {key!r} in {where}{_suggest(key, known)}")


def _rule(entry: dict, source: str, site: bool = False) -> Rule:
    action = entry.get("action")
    if action not in ACTION_CODES:
        raise ProfileError(f"{source}: unknown action {action!r} (use one of {sorted(ACTION_CODES)})")
    element = entry.get("element")
    return Rule(
        action=action,
        source=source,
        name=entry.get("name", ""),
        tag=entry.get("tag"),
        keyword=entry.get("keyword"),
        vr=entry.get("vr"),
        private_creator=entry.get("private_creator"),
        element=int(element[-2:], 16) if element else None,
        site=site,
    )


def _add(profile: Profile, rule: Rule) -> None:
    if rule.private_creator is not None:
        profile.private[(rule.private_creator.strip().upper(), rule.element)] = rule
    elif rule.tag == PRIVATE_ROW:
        profile.private[("*", None)] = rule
    elif rule.tag is not None:
        parsed = parse_tag(rule.tag)
        if isinstance(parsed, tuple):
            profile.masks = [m for m in profile.masks if m[:2] != parsed] + [(*parsed, rule)]
        else:
            profile.tags[parsed] = rule
    elif rule.keyword is not None:
        from pydicom.datadict import tag_for_keyword  # pydicom is loaded by the workers only

        tag = tag_for_keyword(rule.keyword)
        if tag is None:
            raise ProfileError(f"{rule.source}: unknown keyword {rule.keyword!r}")
        profile.tags[tag] = rule
    elif rule.vr is not None:
        profile.by_vr[rule.vr] = rule
    else:
        raise ProfileError(f"{rule.source}: a rule needs tag, keyword, vr or private_creator")


def _code(meta: dict) -> CodedConcept:
    return CodedConcept(meta["code_value"], meta["coding_scheme"], meta["code_meaning"])


def _safe_private() -> frozenset[tuple[str, int, int]]:
    entries = _read(rules_dir() / "safe-private.toml")["private"]
    return frozenset(
        (e["private_creator"].strip().upper(), int(e["group"], 16), int(e["element"], 16))
        for e in entries
    )


def _private_table(name: str) -> dict[tuple[str, int, int], str]:
    entries = _read(rules_dir() / f"{name}.toml").get("private", [])
    table = {}
    for entry in entries:
        if entry.get("action") not in ACTION_CODES:
            raise ProfileError(f"{name}: unknown action {entry.get('action')!r}")
        key = (entry["private_creator"].strip().upper(), int(entry["group"], 16), int(entry["element"], 16))
        table[key] = entry["action"]
    return table


def _private_vrs(name: str) -> dict[tuple[str, int, int], str]:
    """``(creator, group, offset)`` to VR of the ``[[private]]`` entries of rules/``name``.toml."""
    return {
        (e["private_creator"].strip().upper(), int(e["group"], 16), int(e["element"], 16)): e["vr"]
        for e in _read(rules_dir() / f"{name}.toml").get("private", [])
        if e.get("vr")
    }


def _sr_concepts(options: tuple[str, ...]) -> dict[tuple[str, str], str]:
    concepts = {}
    for entry in _read(rules_dir() / "sr-concepts.toml")["concept"]:
        action = entry["basic"]
        for option in options:
            action = entry.get(option, action)
        concepts[(entry["coding_scheme"], entry["code_value"])] = action
    return concepts


def load_profile(name_or_path: str, extra_options: tuple[str, ...] = ()) -> Profile:
    """Load a profile by shipped name (``basic``, ``research``) or TOML path.

    Parameters
    ----------
    name_or_path
        A shipped profile name or the path of a site profile.
    extra_options
        Options to add to those the profile declares.

    Returns
    -------
    Profile
        The compiled profile.

    Raises
    ------
    ProfileError
        If a file is missing or malformed, an option is unknown, or both date options are in force.
    """
    chain: list[tuple[Path, dict]] = []
    path = _resolve_path(name_or_path)
    seen: set[Path] = set()
    while True:
        if path in seen:
            raise ProfileError(f"profile {path} extends itself")
        seen.add(path)
        data = _read(path)
        _check_keys(path, data)
        chain.append((path, data))
        parent = data.get("profile", {}).get("extends")
        if not parent:
            break
        path = _resolve_path(parent, path.parent)
    chain.reverse()  # base first

    options: list[str] = []
    for _, data in chain:
        options += data.get("profile", {}).get("options", [])
    options += extra_options
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ProfileError(
            f"unknown option(s): {', '.join(unknown)}{_suggest(unknown[0], OPTIONS)}; known: {', '.join(OPTIONS)}"
        )
    ordered = tuple(o for o in OPTIONS if o in options)
    if {"retain_long_full_dates", "retain_long_modified_dates"} <= set(ordered):
        raise ProfileError("retain_long_full_dates and retain_long_modified_dates exclude each other")

    base_path, base = chain[0]
    profile = Profile(
        name=chain[-1][1].get("profile", {}).get("name", chain[-1][0].stem),
        options=ordered,
        codes=(),
        description=chain[-1][1].get("profile", {}).get("description", ""),
    )
    codes = [_code(base["profile"])] if "code_value" in base.get("profile", {}) else []
    for entry in base.get("rule", []):
        _add(profile, _rule(entry, base_path.stem))
    outside = _read(rules_dir() / OUTSIDE_TABLE)["rule"]
    for entry in outside:
        _add(profile, _rule(entry, Path(OUTSIDE_TABLE).stem))
    for option in ordered:
        data = _read(rules_dir() / "options" / f"{option}.toml")
        codes.append(_code(data["profile"]))
        for entry in data.get("rule", []):
            _add(profile, _rule(entry, option))
        for entry in outside:
            if option in entry:
                _add(profile, _rule({**entry, "action": entry[option]}, option))
    weakened = []
    for path, data in chain[1:]:
        for entry in data.get("rule", []):
            rule = _rule(entry, path.stem, site=True)
            if rule.action == "K" and not _kept_already(profile, rule):
                weakened.append(f"{path.name} keeps {_target(rule)}")
            _add(profile, rule)
    if weakened:
        codes = [code for code in codes if code.value != BASIC_PROFILE_CODE]
        profile.weakened = tuple(weakened)
    profile.codes = tuple(codes)
    for path, data in chain:  # the most derived profile that says decides
        cap = data.get("profile", {}).get("hipaa_age_cap", profile.hipaa_age_cap)
        if not isinstance(cap, bool):
            raise ProfileError(f"{path}: hipaa_age_cap must be true or false")
        profile.hipaa_age_cap = cap
    if profile.has("retain_safe_private"):
        profile.safe_private = _safe_private()
        for _, data in chain:
            for table_name in data.get("profile", {}).get("private_tables", []):
                profile.private_table.update(_private_table(table_name))
    keeps_private = any(rule.action != "X" for rule in profile.private.values())
    if keeps_private or profile.has("retain_safe_private"):  # private data may be kept
        profile.private_vrs = _private_vrs("safe-private")
        for _, data in chain:
            for table_name in data.get("profile", {}).get("private_tables", []):
                profile.private_vrs.update(_private_vrs(table_name))
    if profile.has("clean_structured_content"):
        profile.sr_concepts = _sr_concepts(ordered)
    return profile


def _kept_already(profile: Profile, rule: Rule) -> bool:
    """Whether the standard's rules in force (Basic and the options) keep what site ``rule``
    keeps; a private creator's attributes count as kept under Retain Safe Private."""
    if rule.private_creator is not None or rule.tag == PRIVATE_ROW:
        return profile.has("retain_safe_private")
    if rule.vr is not None and rule.tag is None and rule.keyword is None:
        return False
    if rule.tag is not None:
        parsed = parse_tag(rule.tag)
        standard = profile.rule_for_tag(parsed) if isinstance(parsed, int) else next(
            (r for m, v, r in profile.masks if (m, v) == parsed), None
        )
    else:
        from pydicom.datadict import tag_for_keyword  # pydicom is loaded by the workers only

        tag = tag_for_keyword(rule.keyword or "")
        standard = profile.rule_for_tag(tag) if tag is not None else None
    return standard is None or standard.action == "K"


def _target(rule: Rule) -> str:
    if rule.private_creator is not None:
        return f"the private attributes of {rule.private_creator!r}"
    if rule.vr is not None and rule.tag is None and rule.keyword is None:
        return f"every {rule.vr} attribute"
    from pydicom.datadict import dictionary_description, tag_for_keyword

    tag = tag_for_keyword(rule.keyword) if rule.keyword else None
    if tag is None:
        return " ".join(filter(None, (rule.name or rule.keyword, rule.tag)))
    return f"{dictionary_description(tag)} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def shipped_profiles() -> list[str]:
    """Names of the profiles shipped in rules/."""
    return sorted(p.stem for p in rules_dir().glob("*.toml") if "profile" in _read(p))
