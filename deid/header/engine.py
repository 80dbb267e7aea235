"""Apply a compiled profile to a dataset: every element, every sequence item at any depth.

Decisions are made on the raw elements (tag and VR); only elements that change are decoded,
which keeps the cost close to pydicom's bare read and write.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydicom._uid_dict import UID_dictionary
from pydicom.charset import decode_bytes, encode_string
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from deid.freetext.clean import clean_text, needs_cleaning
from deid.freetext.variants import IDENTIFYING_ATTRIBUTES, NAME, variant_pattern
from deid.header.actions import (
    BY_CODE,
    CLEAN,
    EMPTY,
    KEEP,
    REMOVE,
    REPLACE_UID,
    SHIFT_DATE,
    TEXT_VRS,
    Action,
)
from deid.header.age import CAP_AGE, PATIENT_AGE
from deid.header.iod import attribute_types, resolve_compound
from deid.header.profiles import Profile
from deid.header.unknown import (
    declared_private_vrs,
    decode_un,
    in_dictionary,
    looks_like_text,
    private_characteristics,
    private_vr,
)
from deid.pseudonyms import Pseudonymizer
from deid.stage import Method

#: Removed whatever the profile says: Encrypted Attributes, Original Attributes, Digital
#: Signatures, MAC Parameters, trailing padding and the Icon Image Sequence, a thumbnail of
#: the pixels that no stage cleans (PS3.15 E.1.1 and the notes of Table E.1-1).
ALWAYS_REMOVED = frozenset(
    {0x04000500, 0x04000561, 0x4FFE0001, 0xFFFAFFFA, 0xFFFCFFFC, 0x00880200}
)
#: UI attributes that name registries and definitions, never an instance.
REGISTRY_UID_KEYWORDS = frozenset(
    {
        "CodingSchemeUID",
        "ContextGroupExtensionCreatorUID",
        "ContextUID",
        "MappingResourceUID",
        "TemplateExtensionCreatorUID",
        "TemplateExtensionOrganizationUID",
        "PrivateRecordUID",
        "TransferSyntaxUID",
        "ImplementationClassUID",
        "EncryptedContentTransferSyntaxUID",
        "CodeSetExtensionCreatorUID",
    }
)
#: Sequences whose items are SR content items (Clean Structured Content, E.3.4).
CONTENT_SEQUENCES = frozenset({0x0040A730, 0x00400555, 0x00400610})
_CONTENT_SEQUENCE = 0x0040A730
_MAX_CONTENT_DEPTH = 64
_IDENTIFYING_TAGS = tuple((Tag(keyword), kind) for keyword, kind in IDENTIFYING_ATTRIBUTES.items())
_CLASS_UID_SUFFIX = "ClassUID"


def _vr_of(element: object, tag: int) -> str:
    """The element's VR; for UN or implicit VR, the dictionary's VR of a public tag."""
    vr = getattr(element, "VR", None)
    if vr and vr != "UN":
        return str(vr)
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    return "UN" if " or " in vr else vr


def _is_overlay_or_curve(group: int) -> bool:
    """Overlay (60xx) and curve (50xx) groups are removed whole: their bitmaps cannot be cleaned."""
    return group & 0xFF01 in (0x5000, 0x6000) and group & 0xFF <= 0x1E


def _is_registry_uid(tag: int) -> bool:
    keyword = keyword_for_tag(tag)
    return keyword in REGISTRY_UID_KEYWORDS or keyword.endswith(_CLASS_UID_SUFFIX)


def _creator(ds: Dataset, tag: int) -> str | None:
    """The private creator of private element ``tag``, upper-case, or ``None``."""
    creator_tag = (tag & 0xFFFF0000) | ((tag >> 8) & 0xFF)
    if creator_tag not in ds:
        return None
    value = ds[creator_tag].value
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value).strip(" \x00").upper()


def patient_key(ds: Dataset) -> str:
    """The original identity a patient's pseudonym and date shift derive from.

    Patient ID with its issuer; else name and birth date; else the Study Instance UID.
    """
    patient_id = str(ds.get("PatientID", "") or "").strip()
    if patient_id:
        return f"id:{patient_id}^{str(ds.get('IssuerOfPatientID', '') or '').strip()}"
    name = str(ds.get("PatientName", "") or "").strip()
    if name:
        return f"name:{name}^{str(ds.get('PatientBirthDate', '') or '').strip()}"
    return f"study:{str(ds.get('StudyInstanceUID', '') or '').strip()}"


def _identifying_pattern(ds: Dataset) -> re.Pattern[str] | None:
    """The object's own identifying values (:data:`IDENTIFYING_ATTRIBUTES`) in every spelling
    free text uses, as one pattern (:mod:`deid.freetext.variants`)."""
    values: set[tuple[str, str]] = set()
    for tag, kind in _IDENTIFYING_TAGS:
        if tag in ds:
            values.update((kind, text) for text in _texts(ds, tag) if text)
    if _CONTENT_SEQUENCE in ds:  # a structured report: the names of its PNAME items (observers ...)
        values.update((NAME, name) for name in _content_person_names(ds))
    return variant_pattern(values)


def _content_person_names(ds: Dataset, depth: int = 0) -> Iterator[str]:
    """Person Name values of the content items under ``ds``, at any depth."""
    for item in ds.get("ContentSequence") or ():
        name = str(item.get("PersonName", "") or "").strip()
        if name:
            yield name
        if depth < _MAX_CONTENT_DEPTH:
            yield from _content_person_names(item, depth + 1)


def _texts(ds: Dataset, tag: int) -> list[str]:
    """The values of a string element; ASCII values straight from the raw bytes (no decoding
    through the character set, which is the slow part of reading a header)."""
    raw = ds.get_item(tag)
    if isinstance(raw, RawDataElement) and raw.value is not None and raw.value.isascii():
        return [v.strip(" \x00") for v in raw.value.decode("ascii").split("\\")]
    element = ds[tag]
    if element.VR == "SQ" or element.value is None:
        return []
    values = element.value if element.VM > 1 else [element.value]
    return [str(v).strip() for v in values]


@dataclass(frozen=True)
class DeclaredPrivateBlock:
    """What an object says of one private block in (0008,0300) (PS3.3 C.12.1.1.7)."""

    safe_block: bool
    safe_offsets: frozenset[int]
    actions: dict[int, str]


def declared_private_blocks(ds: Dataset) -> dict[tuple[int, str], DeclaredPrivateBlock]:
    """Parse the Private Data Element Characteristics Sequence of ``ds``.

    Returns
    -------
    dict
        ``(group, creator)`` to the block's declared safety and de-identification actions.
    """
    blocks = {}
    for group, creator, item in private_characteristics(ds):
        status = str(item.get("BlockIdentifyingInformationStatus", "")).upper()
        safe = item.get("NonidentifyingPrivateElements") or []
        safe = [safe] if isinstance(safe, int) else safe
        actions = {}
        for action in item.get("DeidentificationActionSequence", []):
            code = str(action.get("DeidentificationAction", "")).upper()
            elements = action.get("IdentifyingPrivateElements") or []
            elements = [elements] if isinstance(elements, int) else elements
            if code in BY_CODE:
                actions.update({int(e) & 0xFF: code for e in elements})
        blocks[(group, creator)] = DeclaredPrivateBlock(
            status == "SAFE", frozenset(int(e) & 0xFF for e in safe), actions
        )
    return blocks


@dataclass
class FileContext:
    """The state of one file's de-identification.

    Attributes
    ----------
    profile, pseudo
        The compiled profile and the keyed pseudonymizer.
    types
        Attribute Types of the object's IOD, or ``None`` when unknown.
    patient_pseudonym
        The patient's keyed pseudonym (Patient ID and Patient's Name).
    shift_days
        The patient's date shift in days.
    uid_pairs
        Original to new UIDs replaced in this file (for the crosswalk).
    """

    profile: Profile
    pseudo: Pseudonymizer
    types: dict[tuple[str, ...], str] | None
    patient_pseudonym: str
    shift_days: int
    identifying: re.Pattern[str] | None
    path: list[str] = field(default_factory=list)
    uid_pairs: dict[str, str] = field(default_factory=dict)
    original_patient_id: str = ""
    declared_private: dict[tuple[int, str], DeclaredPrivateBlock] = field(default_factory=dict)
    declared_vrs: dict[tuple[int, str, int], str] = field(default_factory=dict)

    def map_uid(self, uid: str) -> str:
        """The keyed replacement of ``uid``; well-known UIDs are returned unchanged."""
        uid = uid.strip("\x00 ")
        if not uid or uid in UID_dictionary:
            return uid
        new = self.pseudo.uid(uid)
        self.uid_pairs[uid] = new
        return new

    def redact_text(self, ds: Dataset, tag: BaseTag) -> None:
        """Remove identifying values from the text at ``tag``: the object's own, in any spelling,
        and those of others that :mod:`deid.freetext` detects."""
        raw = ds.get_item(tag)
        if (
            isinstance(raw, RawDataElement)
            and raw.value is not None
            and raw.value.isascii()
            and not needs_cleaning(raw.value.decode("ascii"), self.identifying)
        ):
            return  # nothing to strip: leave the element raw, as read
        element = ds[tag]
        if element.VM == 0:
            return
        values = element.value if element.VM > 1 else [element.value]
        # a value cleaned to nothing gets a keyed token (as D), so a Type 1 label stays present
        cleaned = [clean_text(str(v), self.identifying) or (self.pseudo.token(str(v)) if str(v).strip() else "")
                   for v in values]
        if cleaned == [str(v).strip() for v in values]:
            return
        element.value = cleaned if element.VM > 1 else cleaned[0]

    def redact_bytes(self, ds: Dataset, tag: BaseTag) -> None:
        """Clean a value of unknown VR that reads as text as :meth:`redact_text` cleans text; it
        stays UN."""
        value = ds[tag].value
        if not isinstance(value, bytes) or not looks_like_text(value):
            return
        encodings = ds._character_set
        encodings = [encodings] if isinstance(encodings, str) else list(encodings)
        text = decode_bytes(value, encodings, set())
        if not needs_cleaning(text, self.identifying):
            return
        cleaned = clean_text(text, self.identifying)
        encoded = encode_string(cleaned, encodings)
        ds[tag] = DataElement(tag, "UN", encoded + b" " * (len(encoded) % 2))

    def attribute_type(self, keyword: str) -> str | None:
        if self.types is None:
            return None
        found = self.types.get((*self.path, keyword))
        if found is None and not self.path:
            return "3"  # not in the IOD at all: removable
        return found

    # -- the walk --------------------------------------------------------------------------

    def walk(self, ds: Dataset) -> None:
        """Apply the profile to every element of ``ds``, recursing into sequences."""
        creators_used: set[int] = set()
        creators: list[int] = []
        for tag, raw in list(ds.items()):  # as stored: raw elements stay raw, deferred values unread
            group, element = tag >> 16, tag & 0xFFFF
            if group & 1:
                if 0x10 <= element <= 0xFF:
                    creators.append(tag)
                elif element < 0x10 or not self._private(ds, tag, _vr_of(raw, tag)):
                    del ds[tag]
                else:
                    creators_used.add((tag & 0xFFFF0000) | (element >> 8))
                continue
            if (
                element == 0
                or group in (0x0002, 0x0004)
                or tag in ALWAYS_REMOVED
                or _is_overlay_or_curve(group)
            ):
                del ds[tag]
                continue
            if not in_dictionary(int(tag)) and self.profile.rule_for_tag(tag) is None:
                del ds[tag]  # a public tag outside the dictionary (a bit flip, a draft): unknown content
                continue
            vr = _vr_of(raw, tag)
            self._apply(self._action(tag, vr), ds, tag, vr)
        for creator_tag in creators:
            if creator_tag not in creators_used:
                del ds[creator_tag]

    def _apply(self, action: Action, ds: Dataset, tag: BaseTag, vr: str) -> None:
        """Apply ``action`` to the element at ``tag``; a sequence that is neither removed nor
        emptied keeps its items, each walked in turn (the walker owns the recursion)."""
        if vr == "SQ" and action is not REMOVE and action is not EMPTY:
            element = ds[tag]
            if element.VR == "SQ":
                self.walk_sequence(ds, tag, element.value)
            return
        action(self, ds, tag, vr)

    def walk_sequence(self, ds: Dataset, tag: BaseTag, items: Sequence) -> None:
        """Apply the profile to each item of a sequence; SR content items by concept."""
        self.path.append(keyword_for_tag(tag) or f"{tag:08X}")
        try:
            if tag in CONTENT_SEQUENCES and self.profile.sr_concepts:
                kept = [item for item in items if self._content_item_kept(item)]
                if len(kept) != len(items):
                    ds[tag].value = Sequence(kept)
                    items = ds[tag].value
            for item in items:
                self.walk(item)
        finally:
            self.path.pop()

    # -- decisions ---------------------------------------------------------------------------

    def _action(self, tag: BaseTag, vr: str) -> Action:
        rule = self.profile.rule_for_tag(tag)
        if rule is None or not rule.site:
            rule = self.profile.by_vr.get(vr, rule)
        if rule is not None:
            code = rule.action
            if "/" in code:
                code = resolve_compound(code, self.attribute_type(keyword_for_tag(tag)))
            if vr in ("DA", "DT") and code == "C":
                return SHIFT_DATE
            if int(tag) == PATIENT_AGE and code in ("K", "C") and self.profile.hipaa_age_cap:
                return CAP_AGE
            return BY_CODE[code]
        return self._by_vr(tag, vr)

    def _by_vr(self, tag: BaseTag, vr: str) -> Action:
        """Attributes the tables do not list, handled by VR (PS3.15 E.1.1 note on dates)."""
        if vr == "SQ":
            return KEEP
        if vr == "UI":
            return KEEP if _is_registry_uid(tag) else REPLACE_UID
        if vr in ("DA", "DT"):
            option = self.profile.date_option
            return KEEP if option == "full" else SHIFT_DATE if option == "modified" else EMPTY
        if vr == "TM":
            return KEEP if self.profile.date_option else EMPTY
        if vr == "PN":
            return BY_CODE["Z"]
        if vr in TEXT_VRS:
            return CLEAN
        if vr == "UR":
            return REMOVE
        return KEEP

    def _private(self, ds: Dataset, tag: BaseTag, vr: str) -> bool:
        """Handle one private data element; return whether it is kept."""
        creator = _creator(ds, tag)
        if creator is None:
            return False
        offset = tag & 0xFF
        profile = self.profile
        rule = profile.private.get((creator, offset)) or profile.private.get((creator, None))
        code: str | None
        if rule is not None:
            code = resolve_compound(rule.action, None)
        elif profile.has("retain_safe_private"):
            code = self._safe_private_code(creator, tag >> 16, offset)
        else:
            return False
        if code is None or code == "X":
            return False
        if vr == "UN":
            vr = self._read_unknown_private(ds, tag)
            if vr == "UN" and code in ("C", "K"):
                if code == "C":
                    self.redact_bytes(ds, tag)
                return True
        self._apply(BY_CODE[code], ds, tag, vr)
        return tag in ds

    def _read_unknown_private(self, ds: Dataset, tag: BaseTag) -> str:
        """Give a kept private element stored as UN its VR (declared by the object, pydicom's
        private dictionary, the profile's tables) or read it as a sequence; ``"UN"`` if neither."""
        creator = ds[(tag & 0xFFFF0000) | ((tag >> 8) & 0xFF)].value
        if isinstance(creator, bytes):
            creator = creator.decode("latin-1")
        known = private_vr(tag, str(creator), self.declared_vrs, self.profile.private_vrs)
        return decode_un(ds, tag, known)

    def _safe_private_code(self, creator: str, group: int, offset: int) -> str | None:
        """The Retain Safe Private action (E.3.10): what the object declares in its Private Data
        Element Characteristics Sequence, else Table E.3.10-1, else the profile's private tables
        (TCIA's knowledge base); ``None`` when not known safe."""
        declared = self.declared_private.get((group, creator))
        if declared is not None:
            if offset in declared.actions:
                return declared.actions[offset]
            if declared.safe_block or offset in declared.safe_offsets:
                return "C"
        key = (creator, group, offset)
        if key in self.profile.safe_private:
            return "C"
        return self.profile.private_table.get(key)

    def _content_item_kept(self, item: Dataset) -> bool:
        """Clean Structured Content: drop items whose concept Table E.3.4-1 says to remove."""
        names = item.get("ConceptNameCodeSequence")
        if not names:
            return True
        concept = names[0]
        key = (str(concept.get("CodingSchemeDesignator", "")), str(concept.get("CodeValue", "")))
        return self.profile.sr_concepts.get(key, "K") != "X"


class HeaderEngine:
    """De-identify dataset headers with one profile and one key.

    Parameters
    ----------
    profile
        The compiled profile.
    pseudo
        The keyed pseudonymizer.
    """

    def __init__(self, profile: Profile, pseudo: Pseudonymizer) -> None:
        self.profile = profile
        self.pseudo = pseudo
        #: What the engine does to every object, for the provenance stage's claims.
        self.method = Method(profile.name, profile.codes, profile.date_option)

    def context(self, ds: Dataset) -> FileContext:
        """Make the per-file context (pseudonyms, date shift, identifying values) for ``ds``."""
        key = patient_key(ds)
        return FileContext(
            profile=self.profile,
            pseudo=self.pseudo,
            types=attribute_types(str(ds.get("SOPClassUID", ""))),
            patient_pseudonym=self.pseudo.token(key),
            shift_days=self.pseudo.date_shift_days(key),
            identifying=_identifying_pattern(ds),
            original_patient_id=str(ds.get("PatientID", "") or "").strip(),
            declared_private=(
                declared_private_blocks(ds) if self.profile.has("retain_safe_private") else {}
            ),
            declared_vrs=declared_private_vrs(ds) if self.profile.private_vrs else {},
        )

    def apply(self, ds: Dataset) -> FileContext:
        """De-identify ``ds`` in place (the provenance stage claims it, from :attr:`method`).

        Returns
        -------
        FileContext
            What was done: UID pairs, patient pseudonym, the identifying values.
        """
        ctx = self.context(ds)
        ctx.walk(ds)
        return ctx


__all__ = ["HeaderEngine", "FileContext", "patient_key"]
