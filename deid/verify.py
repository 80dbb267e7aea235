"""``deid verify``: find identifying values of the inputs anywhere in a release.

Collects the identifying values of every input object (names, IDs, dates, UIDs, addresses,
institution, station, device serials, at every depth) and searches the bytes of every file
under the release folder and every path component for them.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom._uid_dict import UID_dictionary
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

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
    """

    value: str
    kind: str
    source: str
    origin: str = ""


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
) -> None:
    """Add the identifiers of ``ds`` to ``found``, the words of its descriptive (not
    identifying) text to ``common`` and those of its defined terms and binary values to
    ``coded``."""
    for element in ds:
        keyword = element.keyword or f"{element.tag:08X}"
        where = f"{path}{keyword}"
        if element.VR == "SQ":
            for index, item in enumerate(element.value):
                _identifiers_of(item, f"{where}[{index}].", found, common, coded)
            continue
        if element.tag.is_private or element.VM == 0:
            continue
        if element.VR in ("OB", "OW", "UN"):  # e.g. an ICC profile: its words are nobody's
            coded.update(t.decode("latin-1").upper() for t in _TOKEN.findall(element.value))
            continue
        for text in _values(element):
            forms = _forms(element, keyword, text)
            for value, kind in forms:
                found.add(Identifier(value, kind, where))
            if not forms and element.VR in _DESCRIPTIVE_VRS and keyword not in TEXT_KINDS:
                upper = text.upper()
                # defined terms (CS) are vocabulary whoever they belong to
                words = coded if element.VR == "CS" else common
                words.add(upper)
                words.update(t.decode() for t in _TOKEN.findall(upper.encode("utf-8", "replace")))


def _forms(element: DataElement, keyword: str, text: str) -> list[tuple[str, str]]:
    vr = element.VR
    if vr == "PN":
        parts = [p for p in re.split(r"[\^=\s,]+", text) if len(p) >= 3]
        forms = [(p, "name") for p in parts if p.upper() not in _COMMON_TOKENS]
        return forms + ([(text, "name")] if len(text) >= _MIN_LENGTH else [])
    if vr in ("DA", "DT") and len(text) >= 8 and text[:8].isdigit():
        return [(text[:8], "date")]
    if vr == "UI":
        if text in UID_dictionary or keyword.endswith("ClassUID") or len(text) < 8:
            return []
        return [(text, "uid")]
    kind = TEXT_KINDS.get(keyword)
    if kind is None or len(text) < _MIN_LENGTH:
        return []
    if kind in ("id", "accession") and len(text) < 5 and text.isdigit():
        return []
    return [(text, kind)]


def collect_identifiers(inputs: Iterable[Path]) -> set[Identifier]:
    """Identifying values of every DICOM file under ``inputs`` (non-DICOM files are ignored).

    Parameters
    ----------
    inputs
        Files or folders.

    Returns
    -------
    set of Identifier
    """
    found: set[Identifier] = set()
    common: set[str] = set()
    coded: set[str] = set()
    for root in inputs:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            try:
                ds = dcmread(path, stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - not DICOM or unreadable: nothing to collect
                continue
            own: set[Identifier] = set()
            words: set[str] = set()
            _identifiers_of(ds.file_meta, "meta.", own, words, coded)
            _identifiers_of(ds, "", own, words, coded)
            origin = path.relative_to(root).as_posix() if root.is_dir() else path.name
            found |= {Identifier(i.value, i.kind, i.source, origin) for i in own}
            common |= words - {i.value.upper() for i in own}
    # a name word or an institution the inputs also use as plain descriptive text (a name
    # "billowing mode" and a "mode" in some protocol name; an institution "GE MEDICAL SYSTEMS"
    # and the Manufacturer) proves nothing when found in the release
    common |= coded
    return {i for i in found if i.kind not in _CASELESS_KINDS or i.value.upper() not in common}




def _key(identifier: Identifier) -> bytes:
    """The token an identifier is looked up by: its longest token, upper-cased where case is not
    significant."""
    encoded = identifier.value.encode("utf-8")
    if identifier.kind in _CASELESS_KINDS:
        encoded = encoded.upper()
    return max(_TOKEN.findall(encoded) or [encoded], key=len)


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
    index: dict[bytes, list[Identifier]] = {}
    for identifier in identifiers:
        index.setdefault(_key(identifier), []).append(identifier)
    leaks: set[Leak] = set()

    def scan(data: bytes, where: str, how: str) -> None:
        tokens = set(_TOKEN.findall(data))
        tokens |= {t.upper() for t in tokens}
        upper = None
        origin = origins.get(where)
        for token in tokens & index.keys():
            for identifier in index[token]:
                if identifier.kind == "date" and origin is not None and identifier.origin != origin:
                    continue
                value = identifier.value.encode("utf-8")
                if value != token and identifier.kind in _CASELESS_KINDS:
                    upper = data.upper() if upper is None else upper
                    if value.upper() not in upper:
                        continue
                elif value != token and value not in data:
                    continue
                leaks.add(Leak(identifier, where, how))

    for path in sorted(output_dir.rglob("*")):
        relative = path.relative_to(output_dir).as_posix()
        scan(path.name.encode("utf-8"), relative, "path")
        if path.is_file():
            scan(_searchable_bytes(path), relative, "bytes")
    return sorted(leaks, key=lambda leak: (leak.where, leak.identifier.kind, leak.identifier.source))


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


def verify(output_dir: Path, input_dir: Path, audit_dir: Path | None = None) -> list[Leak]:
    """Identifying values of the inputs under ``input_dir`` that survive in ``output_dir``.

    Parameters
    ----------
    output_dir, input_dir
        The release and the tree it was made from.
    audit_dir
        The run's audit folder, to pair outputs with inputs; default ``OUTPUT_DIR.audit``
        when it exists.
    """
    audit_dir = audit_dir or output_dir.with_name(output_dir.name + ".audit")
    return find_leaks(output_dir, collect_identifiers([input_dir]), read_origins(audit_dir))


def format_leak(leak: Leak, reveal: bool = False) -> str:
    """One line per leak; the value itself (PHI) only with ``reveal``."""
    value = f" {leak.identifier.value!r}" if reveal else ""
    return f"LEAK {leak.identifier.kind} {leak.identifier.source}{value} in {leak.where} ({leak.how})"
