"""``deid verify``: find identifying values of the inputs anywhere in a release.

A release is checked by a short list of checks (:func:`register_check`), each a small callable
that looks at a :class:`Release` and returns :class:`Finding` objects. The first check collects
the identifying values of every input object (names, IDs, dates, UIDs, addresses, institution,
station, device serials, at every depth) and searches the bytes of every file under the release
folder and every path component for them. Inputs are read the way ``deid run`` reads them.

A finding is a *leak* unless the run's profile keeps its attribute on purpose (an option such as
Retain UIDs, or a site rule with action K): those are *retained* values, reported apart. The
profile and options are read from the release itself (``OUT/.deid-release.json``) or the
audit's ``summary.json``.
"""

from __future__ import annotations

import csv
import importlib
import json
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from pydicom import dcmread
from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from deid.freetext.variants import DATE, ID, NAME, PHONE, TEXT, variant_pattern
from deid.header.engine import REGISTRY_UID_KEYWORDS
from deid.header.profiles import Profile, ProfileError, load_profile
from deid.release import MARKER_NAME, read_marker

#: Keyword -> kind of the identifying text attributes.
TEXT_KINDS = {
    "PatientID": "id",
    "OtherPatientIDs": "id",
    "IssuerOfPatientID": "id",
    "AccessionNumber": "accession",
    "StudyID": "id",
    "RequestedProcedureID": "id",
    "ScheduledProcedureStepID": "id",
    "PerformedProcedureStepID": "id",
    "MedicalRecordLocator": "id",
    "PatientAddress": "address",
    "PatientTelephoneNumbers": "phone",
    "InstitutionName": "institution",
    "InstitutionAddress": "address",
    "InstitutionalDepartmentName": "institution",
    "StationName": "station",
    "DeviceSerialNumber": "device_serial",
    "DetectorID": "device_serial",
}
#: Name components too common to mean anything on their own.
_COMMON_TOKENS = frozenset({"ANON", "ANONYMOUS", "ANONYMIZED", "NONE", "UNKNOWN", "TEST", "PATIENT", "PHANTOM"})
_CASELESS_KINDS = frozenset({"name", "address", "institution", "station"})
_MIN_LENGTH = 4
#: Tokens of the searched text: runs of letters and digits, dots inside (UIDs, decimals).
_TOKEN = re.compile(rb"[0-9A-Za-z\x80-\xff]+(?:\.[0-9A-Za-z\x80-\xff]+)*")
#: VRs of descriptive text whose words are common vocabulary, not identifiers.
_DESCRIPTIVE_VRS = frozenset({"CS", "LO", "SH", "ST", "LT", "UT", "UC"})
#: Group 7FE0 and above: pixel data and padding.
_PIXEL_GROUP = 0x7FE00000


@dataclass(frozen=True)
class Identifier:
    """One identifying value of an input.

    Attributes
    ----------
    value
        The text searched for.
    kind
        ``name``, ``id``, ``date``, ``uid``, ``address``, ``institution`` ...
    source
        Keyword path where it was found (never the value).
    origin
        The input file it came from, relative to the input folder.
    vr
        The VR of the element it came from.
    """

    value: str
    kind: str
    source: str
    origin: str = ""
    vr: str = ""


@dataclass(frozen=True)
class Leak:
    """An identifier found in the release: in which file (relative path) and how."""

    identifier: Identifier
    where: str
    how: str


def _values(element: DataElement) -> list[str]:
    value = element.value
    values = value if element.VM > 1 else [value]
    return [str(v).strip(" \x00") for v in values if v is not None]


def _identifiers_of(
    ds: Dataset, path: str, found: set[Identifier], common: set[str], coded: set[str]
) -> int:
    """Add the identifiers of ``ds`` to ``found``, the words of its descriptive (not
    identifying) text to ``common`` and those of its defined terms and binary values to
    ``coded``.

    Returns
    -------
    int
        How many elements could not be decoded (a corrupt VR or value); they are left out.
    """
    undecodable = 0
    for tag in list(ds.keys()):
        if tag >= _PIXEL_GROUP:  # pixel data: image samples, not text
            continue
        try:
            element = ds[tag]
            keyword = element.keyword or f"{element.tag:08X}"
            where = f"{path}{keyword}"
            if element.VR == "SQ":
                for index, item in enumerate(element.value):
                    undecodable += _identifiers_of(item, f"{where}[{index}].", found, common, coded)
                continue
            if element.tag.is_private or element.VM == 0:
                continue
            if element.VR in ("OB", "OW", "UN"):  # e.g. an ICC profile: its words are nobody's
                coded.update(t.decode("latin-1").upper() for t in _TOKEN.findall(element.value))
                continue
            for text in _values(element):
                forms = _forms(element, keyword, text)
                for value, kind in forms:
                    found.add(Identifier(value, kind, where, vr=element.VR))
                if not forms and element.VR in _DESCRIPTIVE_VRS and keyword not in TEXT_KINDS:
                    upper = text.upper()
                    # defined terms (CS) and code values are vocabulary whoever they belong to
                    words = coded if element.VR == "CS" or keyword == "CodeValue" else common
                    words.add(upper)
                    words.update(t.decode() for t in _TOKEN.findall(upper.encode("utf-8", "replace")))
        except Exception:  # noqa: BLE001 - a value pydicom cannot decode: counted, not fatal
            undecodable += 1
    return undecodable


def _forms(element: DataElement, keyword: str, text: str) -> list[tuple[str, str]]:
    vr = element.VR
    if vr == "PN":
        parts = [p for p in re.split(r"[\^=\s,]+", text) if len(p) >= 3]
        forms = [(p, "name") for p in parts if p.upper() not in _COMMON_TOKENS]
        return forms + ([(text, "name")] if len(text) >= _MIN_LENGTH else [])
    if vr in ("DA", "DT") and len(text) >= 8 and text[:8].isdigit():
        return [(text[:8], "date")]
    if vr == "UI":
        if text in UID_dictionary or keyword.endswith("ClassUID") or keyword in REGISTRY_UID_KEYWORDS or len(text) < 8:
            return []
        return [(text, "uid")]
    kind = TEXT_KINDS.get(keyword)
    if kind is None or len(text) < _MIN_LENGTH:
        return []
    if kind in ("id", "accession") and len(text) < 5 and text.isdigit():
        return []
    return [(text, kind)]


def read_dicom(path: Path) -> Dataset | None:
    """Read ``path`` as ``deid run`` reads an input; ``None`` when it is not DICOM or run would
    quarantine it as unreadable. Never raises."""
    from deid.reader import read_dataset
    from deid.stage import Quarantined

    try:
        data = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's warnings quote values, which may be PHI
            return read_dataset(data)
    except (OSError, Quarantined):
        return None
    except Exception:  # noqa: BLE001 - whatever the parser raises, the file is unreadable
        return None


@dataclass
class Collected:
    """What :func:`collect_identifiers` found and how much it looked at."""

    identifiers: set[Identifier] = field(default_factory=set)
    files: int = 0
    dicom: int = 0
    unreadable: int = 0
    undecodable_elements: int = 0


def collect_identifiers(inputs: Iterable[Path], stats: Collected | None = None) -> set[Identifier]:
    """Identifying values of every DICOM file under ``inputs`` (non-DICOM files are ignored).

    Files are read as ``deid run`` reads them (:func:`read_dicom`); an element whose value cannot
    be decoded is counted in ``stats`` and left out, never raised.

    Parameters
    ----------
    inputs
        Files or folders.
    stats
        Filled with the counts of files read, unreadable and undecodable elements.

    Returns
    -------
    set of Identifier
    """
    stats = stats if stats is not None else Collected()
    found: set[Identifier] = set()
    common: set[str] = set()
    coded: set[str] = set()
    for root in inputs:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            stats.files += 1
            ds = read_dicom(path)
            if ds is None:
                stats.unreadable += 1
                continue
            stats.dicom += 1
            own: set[Identifier] = set()
            words: set[str] = set()
            stats.undecodable_elements += _identifiers_of(ds.file_meta, "meta.", own, words, coded)
            stats.undecodable_elements += _identifiers_of(ds, "", own, words, coded)
            origin = path.relative_to(root).as_posix() if root.is_dir() else path.name
            found |= {Identifier(i.value, i.kind, i.source, origin, i.vr) for i in own}
            common |= words - {i.value.upper() for i in own}
    # a name word or an institution the inputs also use as plain descriptive text (a name
    # "billowing mode" and a "mode" in some protocol name; an institution "GE MEDICAL SYSTEMS"
    # and the Manufacturer) proves nothing when found in the release
    common |= coded
    stats.identifiers = {i for i in found if not _proves_nothing(i, common, coded)}
    return stats.identifiers


def _proves_nothing(identifier: Identifier, common: set[str], coded: set[str]) -> bool:
    """Whether finding ``identifier`` in the release proves nothing: a name word or institution
    the inputs also use as descriptive text; a "UID" with no digit (a damaged value, such as a
    shifted ``SECONDARY``) or a number of under five digits (a device serial ``1234``) that the
    inputs also use as a defined term or code value."""
    if identifier.kind in _CASELESS_KINDS:
        return identifier.value.upper() in common
    if identifier.kind == "uid" and not any(c.isdigit() for c in identifier.value):
        return identifier.value.upper() in coded
    if identifier.value.isdigit() and len(identifier.value) < 5:  # a short number the inputs use as a code
        return identifier.value in coded
    return False


def _key(identifier: Identifier) -> bytes:
    """The token an identifier is looked up by: its longest token, upper-cased where case is not
    significant."""
    encoded = identifier.value.encode("utf-8")
    if identifier.kind in _CASELESS_KINDS:
        encoded = encoded.upper()
    return max(_TOKEN.findall(encoded) or [encoded], key=len)


class IdentifierIndex:
    """Identifiers by the token they are looked up by (:func:`_key`), to find them in any bytes.

    Parameters
    ----------
    identifiers
        What must not appear.
    """

    def __init__(self, identifiers: Iterable[Identifier]) -> None:
        self.index: dict[bytes, list[Identifier]] = {}
        for identifier in identifiers:
            self.index.setdefault(_key(identifier), []).append(identifier)

    def found_in(self, data: bytes, origin: str | None = None) -> Iterator[Identifier]:
        """The identifiers whose whole value occurs in ``data`` (see :func:`find_leaks`); dates
        only those of ``origin``, the input the data came from, where it is known."""
        tokens = set(_TOKEN.findall(data))
        tokens |= {t.upper() for t in tokens}
        upper = None
        for token in tokens & self.index.keys():
            for identifier in self.index[token]:
                if identifier.kind == "date" and origin is not None and identifier.origin != origin:
                    continue
                value = identifier.value.encode("utf-8")
                if value != token and identifier.kind in _CASELESS_KINDS:
                    upper = data.upper() if upper is None else upper
                    if value.upper() not in upper:
                        continue
                elif value != token and value not in data:
                    continue
                yield identifier


def find_leaks(
    output_dir: Path, identifiers: set[Identifier], origins: dict[str, str] | None = None
) -> list[Leak]:
    """Search every file's bytes and every path component under ``output_dir``.

    Text is split into tokens (runs of letters and digits, with inner dots), so a value only
    matches whole tokens: a new UID ``1.2.3.45`` does not leak ``1.2.3.4``, nor does
    ``120240101`` leak ``20240101``. Values of several tokens are then confirmed whole.

    Parameters
    ----------
    output_dir
        The release folder.
    identifiers
        What must not appear.
    origins
        Output path (relative) to the input it came from, where known (the audit's files.csv).
        Dates then only count in outputs of their own input: a shifted date of one patient may
        by chance equal a real date of another.

    Returns
    -------
    list of Leak
        One per identifier and file where it was found, sorted by file.
    """
    origins = origins or {}
    index = IdentifierIndex(identifiers)
    own_reports = _own_reports()
    leaks: set[Leak] = set()

    def scan(data: bytes, where: str, how: str) -> None:
        fixed_words = own_reports.get(where, frozenset())  # deid's own words in its reports
        leaks.update(
            Leak(identifier, where, how)
            for identifier in index.found_in(data, origins.get(where))
            if identifier.kind not in _CASELESS_KINDS or _key(identifier) not in fixed_words
        )

    for path in sorted(output_dir.rglob("*")):
        relative = path.relative_to(output_dir).as_posix()
        scan(path.name.encode("utf-8"), relative, "path")
        if path.is_file():
            scan(_searchable_bytes(path), relative, "bytes")
    return sorted(leaks, key=lambda leak: (leak.where, leak.identifier.kind, leak.identifier.source))


def _own_reports() -> dict[str, frozenset[bytes]]:
    from deid.description import own_reports

    return own_reports()


def _searchable_bytes(path: Path) -> bytes:
    """The file's bytes; for DICOM, those before the pixel data, whose values are image samples
    (burned-in text is the pixel stages' to find, not a byte search's)."""
    data = path.read_bytes()
    if data[128:132] != b"DICM":
        return data
    try:
        with path.open("rb") as handle:
            dcmread(handle, stop_before_pixels=True)
            return data[: handle.tell()]
    except Exception:  # noqa: BLE001 - unreadable: search it whole
        return data


def read_origins(audit_dir: Path) -> dict[str, str]:
    """Output path to input path, from a run's private ``files.csv`` (empty when absent)."""
    path = audit_dir / "files.csv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["output"]: row["input"] for row in csv.DictReader(handle) if row["output"]}


# -- the release under verification, and the checks -------------------------------------------


@dataclass(frozen=True)
class Finding:
    """A value of the inputs found in the release.

    Attributes
    ----------
    check
        The name of the check that found it.
    kind
        ``name``, ``id``, ``date``, ``uid``, ``address`` ... or a check's own kind (``pixels``).
    source
        Where in the input the value came from (keyword path), or what the check looked at;
        never the value.
    where
        The output file, relative to the release folder.
    how
        ``bytes``, ``path``, or a check's own word (``pixels``).
    value
        The value found (PHI: printed only on request).
    origin
        The input file it came from, relative to the input folder, where known.
    vr
        The VR of the input element, where known; decides with ``source`` whether the profile
        keeps it.
    """

    check: str
    kind: str
    source: str
    where: str
    how: str
    value: str = ""
    origin: str = ""
    vr: str = ""


class Release:
    """A release under verification: its folders, the run's profile, and readers for checks.

    Parameters
    ----------
    output_dir, input_dir
        The release and the tree it was made from.
    audit_dir
        The run's audit folder (``files.csv`` pairs outputs with inputs; ``summary.json`` names
        the profile); default ``OUTPUT_DIR.audit``.
    profile
        Profile name or TOML path and extra options to judge retained values by; default the
        one the run recorded.

    Raises
    ------
    ProfileError
        If ``profile`` is given and cannot be loaded.
    """

    def __init__(
        self,
        output_dir: Path,
        input_dir: Path,
        audit_dir: Path | None = None,
        profile: tuple[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.output_dir = output_dir
        self.input_dir = input_dir
        self.audit_dir = audit_dir or output_dir.with_name(output_dir.name + ".audit")
        self.origins = read_origins(self.audit_dir)
        self.counts: dict[str, int] = {}
        self.kinds: dict[str, int] = {}
        self.notes: list[str] = []
        self._masked: tuple[str, bytes] = ("", b"")
        self.profile_source = "given"
        if profile is not None:
            self.profile: Profile | None = load_profile(*profile)
        else:
            self.profile = self._recorded_profile()

    def _recorded_profile(self) -> Profile | None:
        """The profile the run recorded: in the release marker, else the audit's summary."""
        for source, recorded in ((MARKER_NAME, read_marker(self.output_dir)), ("summary.json", self._summary())):
            name = recorded.get("profile_source") or recorded.get("profile") if recorded else None
            if recorded is None or not isinstance(name, str):
                continue
            self.profile_source = source
            try:
                return load_profile(name, tuple(recorded.get("options") or ()))
            except ProfileError as exc:
                self.notes.append(
                    f"the recorded profile cannot be loaded ({exc}); retained values count as leaks: "
                    "pass --profile"
                )
                return None
        self.notes.append("no record of the run's profile; retained values count as leaks: pass --profile")
        return None

    def _summary(self) -> dict[str, Any] | None:
        try:
            summary = json.loads((self.audit_dir / "summary.json").read_text())
        except (OSError, ValueError):
            return None
        return summary if isinstance(summary, dict) else None

    def count(self, what: str, number: int = 1) -> None:
        """Add ``number`` to what was checked (``what``: e.g. ``pixel frames``)."""
        self.counts[what] = self.counts.get(what, 0) + number

    def output_files(self) -> list[str]:
        """Every file under the release folder, relative, sorted."""
        return sorted(p.relative_to(self.output_dir).as_posix() for p in self.output_dir.rglob("*") if p.is_file())

    def inputs(self) -> list[str]:
        """Every file under the input folder, relative, sorted."""
        return sorted(p.relative_to(self.input_dir).as_posix() for p in self.input_dir.rglob("*") if p.is_file())

    def read_output(self, relative: str) -> Dataset | None:
        """An output file as a Dataset, or ``None`` when it is not DICOM or unreadable."""
        return read_dicom(self.output_dir / relative)

    def read_input(self, relative: str) -> Dataset | None:
        """An input file read as ``deid run`` reads it, or ``None`` (not DICOM, unreadable)."""
        return read_dicom(self.input_dir / relative)

    @cached_property
    def collected(self) -> Collected:
        """The identifying values of the inputs, with the counts of what was read."""
        stats = Collected()
        collect_identifiers([self.input_dir], stats)
        return stats

    @property
    def identifiers(self) -> set[Identifier]:
        """The identifying values of the inputs."""
        return self.collected.identifiers

    def retained_by(self, finding: Finding) -> str:
        """The option or profile whose rule keeps ``finding`` on purpose, or ``""``: the rule of
        its own attribute, or, for a value found in a file only as (part of) values the profile
        keeps (an Issuer of Patient ID "SPRINGFIELD" within a retained Institution Address), theirs."""
        return self._rule_keeping(finding.source, finding.vr) or self._inside_kept_values(finding)

    def _rule_keeping(self, source: str, vr: str) -> str:
        if self.profile is None or not source:
            return ""
        keyword = re.sub(r"\[\d+\]$", "", source.rsplit(".", 1)[-1])
        tag = tag_for_keyword(keyword)
        if tag is None:
            return ""
        rule = self.profile.rule_for_tag(tag)
        if rule is None or not rule.site:
            rule = self.profile.by_vr.get(vr, rule)
        if rule is not None:
            return rule.source if rule.action == "K" else ""
        if vr in ("DA", "DT") and self.profile.date_option == "full":
            return "retain_long_full_dates"
        return ""

    @cached_property
    def _kept_values(self) -> dict[bytes, str]:
        """Upper-cased identifying values the profile keeps, with the rule that keeps them."""
        kept: dict[bytes, str] = {}
        for identifier in self.identifiers:
            rule = self._rule_keeping(identifier.source, identifier.vr)
            if rule:
                kept[identifier.value.upper().encode("utf-8")] = rule
        return kept

    def _inside_kept_values(self, finding: Finding) -> str:
        if finding.how != "bytes" or not finding.value or self.profile is None:
            return ""
        needle = finding.value.upper().encode("utf-8")
        containing = {v: rule for v, rule in self._kept_values.items() if needle in v}
        if not containing:
            return ""
        data = self._without_kept_values(finding.where)
        if needle in set(_TOKEN.findall(data)) or (len(_TOKEN.findall(needle)) > 1 and needle in data):
            return ""
        return "+".join(sorted(set(containing.values())))

    def _without_kept_values(self, where: str) -> bytes:
        """The searchable bytes of the release file ``where``, upper-cased, every kept value blanked;
        the last file's is remembered (findings come file by file)."""
        if self._masked[0] != where:
            data = _searchable_bytes(self.output_dir / where).upper()
            for value in sorted(self._kept_values, key=len, reverse=True):
                data = data.replace(value, b"\0")
            self._masked = (where, data)
        return self._masked[1]


class Check(Protocol):
    """One verification: looks at a release and returns what it found."""

    name: str

    def describe(self) -> str:
        """One line on what the check looks for and where."""

    def __call__(self, release: Release) -> Iterable[Finding]:
        """The values of the inputs found in the release."""


CHECKS: dict[str, Check] = {}
#: Modules whose checks register themselves (with :func:`register_check`) when imported.
CHECK_MODULES: tuple[str, ...] = ("deid.checks",)  # the unread-value and pixel checks


def register_check(check: type | Check) -> Any:
    """Add ``check`` (a class with no constructor arguments, or an instance) to :data:`CHECKS`;
    usable as a class decorator. Returns ``check`` unchanged."""
    instance = check() if isinstance(check, type) else check
    CHECKS[instance.name] = instance
    return check


@register_check
class HeaderValuesCheck:
    """The identifying values of every input header, searched for in the bytes of every
    release file before its pixel data, and in every path component."""

    name = "header-values"

    def describe(self) -> str:
        return "identifying header values of the inputs, in every release file's bytes and path"

    def __call__(self, release: Release) -> Iterable[Finding]:
        collected = release.collected
        release.count("input files", collected.files)
        release.count("input DICOM objects", collected.dicom)
        if collected.undecodable_elements:
            release.count("input elements not decodable (left out)", collected.undecodable_elements)
        distinct = {(i.value, i.kind) for i in collected.identifiers}
        release.count("identifying values", len(distinct))
        release.kinds.update(_tally(kind for _, kind in distinct))
        for leak in find_leaks(release.output_dir, collected.identifiers, release.origins):
            identifier = leak.identifier
            yield Finding(self.name, identifier.kind, identifier.source, leak.where, leak.how,
                          identifier.value, identifier.origin, identifier.vr)


#: Identifier kinds whose other spellings (:mod:`deid.freetext.variants`) are searched in text.
_VARIANT_KINDS = {"name": NAME, "id": ID, "accession": ID, "phone": PHONE, "address": TEXT}
_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN"})


def variant_values(identifiers: Iterable[Identifier]) -> set[tuple[str, str]]:
    """The ``(kind, value)`` pairs of :func:`deid.freetext.variants.variant_pattern` for the
    identifiers of one input: name parts that are not common words (and a whole name only when
    all its parts are such), IDs, phone numbers, addresses and the birth date."""
    parts = {i.value.upper() for i in identifiers if i.kind == "name"}
    values = set()
    for identifier in identifiers:
        kind = _VARIANT_KINDS.get(identifier.kind)
        if identifier.kind == "date" and identifier.source.endswith("PatientBirthDate"):
            kind = DATE
        if kind == NAME and re.search(r"[\^=\s]", identifier.value):
            words = [w for w in re.split(r"[\^=\s,]+", identifier.value.upper()) if len(w) >= 3]
            if not set(words) <= parts:
                continue
        if kind is not None:
            values.add((kind, identifier.value))
    return values


@register_check
class TextVariantsCheck:
    """The identifying values of each input in the spellings free text uses (``SMITH_LESION1``,
    ``14 Feb 1931``, an ID with spaces ...), searched in the text elements of its own outputs."""

    name = "text-variants"

    def describe(self) -> str:
        return "identifying values of each input in other spellings, in the text of its outputs"

    def __call__(self, release: Release) -> Iterable[Finding]:
        if not release.origins:
            release.notes.append("no files.csv pairs outputs with inputs: text variants not searched")
            return
        by_origin: dict[str, list[Identifier]] = {}
        for identifier in release.identifiers:
            by_origin.setdefault(identifier.origin, []).append(identifier)
        for where, origin in sorted(release.origins.items()):
            own = by_origin.get(origin, [])
            pattern = variant_pattern(variant_values(own))
            ds = release.read_output(where) if pattern is not None else None
            if ds is not None and pattern is not None:
                release.count("output files searched for text variants")
                known = {i.value.upper() for i in own}
                yield from self._search(ds, pattern, known, where, origin)

    def _search(
        self, ds: Dataset, pattern: re.Pattern[str], known: set[str], where: str, origin: str
    ) -> Iterator[Finding]:
        """Matches of ``pattern`` in the text elements of ``ds``, less those made only of whole
        values in ``known`` (the header-values check reports those)."""
        for element in ds.iterall():
            if element.VR not in _TEXT_VRS or element.VM == 0:
                continue
            for text in _values(element):
                for match in pattern.finditer(text):
                    if set(re.findall(r"[^\W_]+", match.group().upper())) <= known:
                        continue
                    yield Finding(self.name, "text variant", element.keyword or str(element.tag), where,
                                  "text", match.group(), origin, element.VR)


# -- the report ------------------------------------------------------------------------------


@dataclass
class Group:
    """The findings of one value: its kinds (``/``-joined), where in the inputs it was and where
    it was found."""

    kind: str
    value: str
    sources: list[str]
    places: list[tuple[str, str]]
    retained_by: str = ""

    def as_dict(self, reveal: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "kind": self.kind, "sources": self.sources,
            "files": [{"path": where, "how": how} for where, how in self.places],
        }
        if self.retained_by:
            entry["retained_by"] = self.retained_by
        if reveal:
            entry["value"] = self.value
        return entry


@dataclass
class Report:
    """The outcome of ``deid verify``.

    Attributes
    ----------
    leaks, retained
        Findings grouped by value: leaks, and values the profile keeps on purpose.
    checked
        What was looked at: counts by what (release files, input files, identifying values ...).
    kinds
        Identifying values collected, by kind.
    checks
        ``(name, description)`` of every check run.
    profile
        ``name (options)`` of the profile retained values were judged by, or ``None``.
    notes
        Lines the reader must see (no profile recorded, a check that failed).
    failed
        Names of checks that raised: the release is then not fully verified.
    """

    leaks: list[Group]
    retained: list[Group]
    checked: dict[str, int]
    kinds: dict[str, int]
    checks: list[tuple[str, str]]
    profile: str | None
    notes: list[str]
    failed: list[str]

    @property
    def exit_code(self) -> int:
        """1 for a leak; 70 when a check could not run; else 0."""
        return 1 if self.leaks else 70 if self.failed else 0

    def as_dict(self, reveal: bool = False) -> dict[str, Any]:
        """The report as JSON-ready data; values (PHI) only with ``reveal``."""
        return {
            "leaks": [g.as_dict(reveal) for g in self.leaks],
            "retained": [g.as_dict(reveal) for g in self.retained],
            "checked": self.checked, "kinds": self.kinds,
            "checks": [{"name": n, "description": d} for n, d in self.checks],
            "profile": self.profile, "notes": self.notes, "failed": self.failed,
            "exit_code": self.exit_code,
        }

    def lines(self, reveal: bool = False, details: bool = False) -> Iterator[str]:
        """The report for a person: what was checked, each leak, the retained values by option
        (each value with ``details``), and a closing line."""
        yield "checked: " + ", ".join(f"{n} {what}" for what, n in self.checked.items())
        yield "identifying values by kind: " + (", ".join(f"{k} {n}" for k, n in self.kinds.items()) or "none")
        yield "checks: " + "; ".join(f"{name} ({text})" for name, text in self.checks)
        yield f"profile: {self.profile or 'unknown'}"
        yield from (f"note: {note}" for note in self.notes)
        for group in self.leaks:
            yield _group_line("LEAK", group, reveal)
        by_option: dict[str, list[Group]] = {}
        for group in self.retained:
            by_option.setdefault(group.retained_by, []).append(group)
        for option, groups in sorted(by_option.items()):
            kinds = ", ".join(f"{k} {n}" for k, n in _tally(g.kind for g in groups).items())
            places = len({where for g in groups for where, _ in g.places})
            yield (f"RETAINED by {option}: {len(groups)} value(s) ({kinds}) in {places} file(s); "
                   "kept on purpose, not leaks")
            if details:
                yield from ("  " + _group_line("RETAINED", g, reveal) for g in groups)
        retained = f"; {len(self.retained)} value(s) retained by the profile" if self.retained else ""
        failed = f"; check(s) failed: {', '.join(self.failed)}" if self.failed else ""
        yield f"{len(self.leaks)} leak(s) found{retained}{failed}"


def _tally(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))


def _group_line(label: str, group: Group, reveal: bool) -> str:
    value = f" {group.value!r}" if reveal else ""
    sources = ", ".join(group.sources[:3]) + (f" +{len(group.sources) - 3}" if len(group.sources) > 3 else "")
    shown = ", ".join(f"{where} ({how})" for where, how in group.places[:3])
    more = f", +{len(group.places) - 3} more" if len(group.places) > 3 else ""
    return f"{label} {group.kind} {sources}{value} in {len(group.places)} file(s): {shown}{more}"


def _group(findings: Iterable[Finding], release: Release) -> tuple[list[Group], list[Group]]:
    """Findings grouped by value, apart for leaks and for values the profile keeps on purpose
    (:meth:`Release.retained_by`); a value kept in one file may leak in another."""
    groups: dict[tuple[str, str], list[Finding]] = {}
    for finding in findings:
        kept = release.retained_by(finding)
        groups.setdefault((kept, finding.value or f"{finding.check}:{finding.source}"), []).append(finding)
    leaks: list[Group] = []
    retained: list[Group] = []
    for (kept, value), members in sorted(groups.items()):
        group = Group(
            "/".join(sorted({f.kind for f in members})), value, sorted({f.source for f in members}),
            sorted({(f.where, f.how) for f in members}), kept,
        )
        (retained if kept else leaks).append(group)
    return leaks, retained


def verify(
    output_dir: Path,
    input_dir: Path,
    audit_dir: Path | None = None,
    profile: tuple[str, tuple[str, ...]] | None = None,
    checks: Iterable[str] | None = None,
    ocr: bool = False,
) -> Report:
    """Check the release ``output_dir`` against the tree ``input_dir`` it was made from.

    Parameters
    ----------
    output_dir, input_dir
        The release and its inputs.
    audit_dir
        The run's audit folder; default ``OUTPUT_DIR.audit`` when it exists.
    profile
        ``(name or TOML path, extra options)`` to judge retained values by; default what the run
        recorded.
    checks
        Names of the checks to run; default every registered one that is not opt-in.
    ocr
        Also run the opt-in checks (OCR of the release's pixels).

    Returns
    -------
    Report

    Raises
    ------
    ProfileError
        If ``profile`` is given and cannot be loaded.
    KeyError
        If a named check is unknown.
    """
    for module in CHECK_MODULES:
        importlib.import_module(module)
    release = Release(output_dir, input_dir, audit_dir, profile)
    chosen = (
        [CHECKS[name] for name in checks] if checks is not None
        else [c for c in CHECKS.values() if ocr or not getattr(c, "opt_in", False)]
    )
    outputs = release.output_files()
    release.count("release files", len(outputs))
    findings: list[Finding] = []
    failed = []
    for check in chosen:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's warnings quote values, which may be PHI
                findings += list(check(release))
        except Exception as exc:  # noqa: BLE001 - one check failing must not hide the others' findings
            failed.append(check.name)
            release.notes.append(f"check {check.name} failed ({type(exc).__name__}); the release is not fully verified")
    leaks, retained = _group(findings, release)
    profile_text = (
        f"{release.profile.name} ({', '.join(release.profile.options) or 'no options'}; from {release.profile_source})"
        if release.profile is not None else None
    )
    return Report(leaks, retained, release.counts, release.kinds, [(c.name, c.describe()) for c in chosen],
                  profile_text, release.notes, failed)
