"""Values nobody reads: private elements stored as UN, and public elements outside the dictionary.

Every private element of an implicit-VR file, and any element an explicit-VR writer did not
know, arrives as UN: bytes that a profile cannot clean. :func:`decode_un` gives such an element
its VR, found (in this order) in what the object itself declares (Private Data Element
Definition Sequence, PS3.3 C.12.1.1.7), pydicom's private dictionary, and the profile's private
tables (Table E.3.10-1, TCIA's knowledge base); a value of unknown VR that is an encoded
sequence (PS3.5 6.2.2: Implicit VR Little Endian inside UN) is read as one. The element is then
cleaned as any other of its VR, its items at every depth.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from functools import lru_cache

from pydicom.datadict import DicomDictionary, mask_match, private_dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag
from pydicom.values import convert_SQ

#: The first bytes of an item (FFFE,E000) in little endian: a value that starts so is a sequence.
_ITEM_LE = b"\xfe\xff\x00\xe0"
#: Bytes of text values: printable characters, the multi-value separator and padding.
_TEXT_BYTES = frozenset((string.printable + "\x00").encode()) | frozenset(range(0xA0, 0x100))
_VALID_VRS = frozenset(
    "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)


@lru_cache(maxsize=4096)
def in_dictionary(tag: int) -> bool:
    """Whether ``tag`` is a public data element of the data dictionary (repeating groups too)."""
    return tag in DicomDictionary or mask_match(tag) is not None


def private_characteristics(ds: Dataset) -> Iterator[tuple[int, str, Dataset]]:
    """``(group, creator upper-case, item)`` for each item of the object's Private Data Element
    Characteristics Sequence (PS3.3 C.12.1.1.7) that names its block; the others are passed over."""
    for item in ds.get("PrivateDataElementCharacteristicsSequence", []):
        try:
            group = int(item.PrivateGroupReference)
            creator = str(item.PrivateCreatorReference).strip().upper()
        except (AttributeError, TypeError, ValueError):
            continue
        yield group, creator, item


def declared_private_vrs(ds: Dataset) -> dict[tuple[int, str, int], str]:
    """The VRs the object declares for its private elements.

    Returns
    -------
    dict
        ``(group, creator upper-case, element offset)`` to VR, from the Private Data Element
        Definition Sequence of each item of the Private Data Element Characteristics Sequence.
    """
    declared: dict[tuple[int, str, int], str] = {}
    for group, creator, block in private_characteristics(ds):
        for definition in block.get("PrivateDataElementDefinitionSequence", []):
            try:
                offset = int(definition.PrivateDataElement) & 0xFF
                vr = str(definition.PrivateDataElementValueRepresentation).strip().upper()
            except (AttributeError, TypeError, ValueError):
                continue
            if vr in _VALID_VRS:
                declared[(group, creator, offset)] = vr
    return declared


def private_vr(
    tag: int,
    creator: str,
    declared: dict[tuple[int, str, int], str],
    tables: dict[tuple[str, int, int], str],
) -> str | None:
    """The VR of private element ``tag`` of block ``creator`` (as stored), or ``None`` if unknown.

    Parameters
    ----------
    declared
        What the object declares (:func:`declared_private_vrs`).
    tables
        ``(creator upper-case, group, offset)`` to VR from the profile's private tables.
    """
    group, offset, key = tag >> 16, tag & 0xFF, creator.strip(" \x00").upper()
    try:
        dictionary = private_dictionary_VR(Tag(tag), creator.strip(" \x00"))
    except KeyError:
        dictionary = None
    for vr in (declared.get((group, key, offset)), dictionary, tables.get((key, group, offset))):
        vr = (vr or "").split(" or ")[0]  # "US or SS": either reads the bytes
        if vr in _VALID_VRS and vr != "UN":
            return vr
    return None


def looks_like_text(value: bytes) -> bool:
    """Whether a value of unknown VR reads as text (it is then searched like text)."""
    return bool(value) and all(byte in _TEXT_BYTES for byte in value)


def decode_un(ds: Dataset, tag: BaseTag, vr: str | None) -> str:
    """Re-read the UN element at ``tag`` of ``ds`` as ``vr`` (or as a sequence when ``vr`` is
    ``None`` and the value is an encoded sequence), replacing it in ``ds``.

    Returns
    -------
    str
        The element's VR now: ``vr``, ``"SQ"``, or ``"UN"`` when it stays as it was (unknown VR,
        or bytes that do not decode as ``vr``).
    """
    raw = ds.get_item(tag)
    value = raw.value if isinstance(raw, RawDataElement) else ds[tag].value
    if not isinstance(value, bytes) or not value:
        return "UN"
    little = raw.is_little_endian if isinstance(raw, RawDataElement) else True
    if vr is None:
        if not value.startswith(_ITEM_LE):
            return "UN"
        vr = "SQ"
    element = _sequence(value, little, ds) if vr == "SQ" else _typed(tag, vr, value, little, ds)
    if element is None or vr != element.VR:
        return "UN"
    ds[tag] = DataElement(tag, vr, element.value) if vr == "SQ" else element
    return vr


def _sequence(value: bytes, little: bool, ds: Dataset) -> DataElement | None:
    """``value`` read as a sequence: Implicit VR Little Endian (PS3.5 6.2.2), else as the file's
    own byte order says (writers that ignored the rule)."""
    for implicit, little_endian in ((True, True), (True, little)):
        try:
            encodings = ds._character_set  # str or list, as pydicom itself passes it
            return DataElement(0, "SQ", convert_SQ(value, implicit, little_endian, encodings))  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - not a sequence in this encoding
            continue
    return None


def _typed(tag: BaseTag, vr: str, value: bytes, little: bool, ds: Dataset) -> DataElement | None:
    as_vr = RawDataElement(Tag(tag), vr, len(value), value, 0, True, little)
    try:
        return convert_raw_data_element(as_vr, encoding=ds._character_set, ds=ds)
    except Exception:  # noqa: BLE001 - not what the VR says: the caller judges the bytes
        return None


__all__ = ["in_dictionary", "declared_private_vrs", "private_vr", "looks_like_text", "decode_un"]
