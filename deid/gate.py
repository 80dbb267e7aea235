"""The gate: refuse objects that the stages in force cannot make safe."""

from __future__ import annotations

from pydicom._uid_dict import UID_dictionary

from deid.header.profiles import Profile
from deid.stage import Item, Quarantined

#: Encapsulated documents (PDF, CDA, STL, OBJ, MTL): their payload cannot be cleaned.
ENCAPSULATED_DOCUMENTS = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.104.1",
        "1.2.840.10008.5.1.4.1.1.104.2",
        "1.2.840.10008.5.1.4.1.1.104.3",
        "1.2.840.10008.5.1.4.1.1.104.4",
        "1.2.840.10008.5.1.4.1.1.104.5",
    }
)
#: Modalities whose images often carry burned-in text when the header does not say otherwise:
#: ultrasound and screen captures, and radiographs (names and dates printed by the modality).
TEXT_PRONE_MODALITIES = frozenset(
    {"US", "IVUS", "OT", "SC", "XC", "ES", "GM", "SM", "DOC", "CR", "DX", "MG", "XA", "RF", "PX", "IO"}
)
#: Secondary Capture SOP classes: screenshots, always suspected of text.
SECONDARY_CAPTURE = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)


def may_carry_text(ds) -> bool:
    """Whether an image must be cleaned of burned-in text before it can leave.

    Burned In Annotation YES; any Secondary Capture; and, unless Burned In Annotation says NO,
    text-prone modalities and CT/MR localizers (scouts print the patient's name).
    """
    if "PixelData" not in ds:
        return False
    burned_in = str(ds.get("BurnedInAnnotation", "") or "").upper()
    if burned_in == "YES" or str(ds.get("SOPClassUID", "")) in SECONDARY_CAPTURE:
        return True
    if burned_in == "NO":
        return False
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    return str(ds.get("Modality", "")).upper() in TEXT_PRONE_MODALITIES or "LOCALIZER" in image_type


class Gate:
    """Quarantine what the profile and the enabled stages cannot make safe.

    Parameters
    ----------
    profile
        The profile in force (Clean Structured Content decides whether SR content is handled).
    pixel_cleaning
        Whether a burned-in-text stage runs after the header stage.
    """

    name = "gate"

    def __init__(self, profile: Profile, pixel_cleaning: bool) -> None:
        self.profile = profile
        self.pixel_cleaning = pixel_cleaning

    def describe(self) -> str:
        return (
            "quarantine encapsulated documents, unknown SOP classes, SR content without "
            "Clean Structured Content, and images likely to carry burned-in text when no pixel "
            "cleaning runs"
        )

    def __call__(self, item: Item) -> None:
        ds = item.ds
        sop_class = str(ds.get("SOPClassUID", "") or getattr(ds.file_meta, "MediaStorageSOPClassUID", ""))
        if not sop_class or not ds.get("SOPInstanceUID"):
            raise Quarantined("missing SOP Class UID or SOP Instance UID")
        if sop_class in ENCAPSULATED_DOCUMENTS:
            raise Quarantined("encapsulated document: its payload cannot be de-identified")
        if sop_class not in UID_dictionary:
            raise Quarantined("unknown or private SOP class: no rules know what it may hold")
        if "ContentSequence" in ds and not self.profile.has("clean_structured_content"):
            raise Quarantined("structured content: release it with --option clean_structured_content")
        if not self.pixel_cleaning and may_carry_text(ds):
            raise Quarantined(
                "image may carry burned-in text and pixel cleaning is off (--header-only): run without it"
            )
