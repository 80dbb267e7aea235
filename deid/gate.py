"""The gate: refuse objects that the stages in force cannot make safe."""

from __future__ import annotations

from pydicom._uid_dict import UID_dictionary
from pydicom.uid import MediaStorageDirectoryStorage

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
#: Modalities whose images usually carry burned-in text when the header does not say otherwise.
TEXT_PRONE_MODALITIES = frozenset({"US", "OT", "SC", "XC", "ES", "GM", "SM", "DOC", "IVUS"})
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
            "quarantine encapsulated documents, DICOMDIRs, unknown SOP classes, SR content without "
            "Clean Structured Content, and images likely to carry burned-in text when no pixel "
            "cleaning runs"
        )

    def __call__(self, item: Item) -> None:
        ds = item.ds
        sop_class = str(ds.get("SOPClassUID", "") or getattr(ds.file_meta, "MediaStorageSOPClassUID", ""))
        if not sop_class or not ds.get("SOPInstanceUID"):
            raise Quarantined("missing SOP Class UID or SOP Instance UID")
        if sop_class == MediaStorageDirectoryStorage:
            raise Quarantined("DICOMDIR: regenerate it for the release instead of copying it")
        if sop_class in ENCAPSULATED_DOCUMENTS:
            raise Quarantined("encapsulated document: its payload cannot be de-identified")
        if sop_class not in UID_dictionary:
            raise Quarantined("unknown or private SOP class")
        if "ContentSequence" in ds and not self.profile.has("clean_structured_content"):
            raise Quarantined("structured content needs the clean_structured_content option")
        if "PixelData" in ds and not self.pixel_cleaning:
            burned_in = str(ds.get("BurnedInAnnotation", "") or "").upper()
            if burned_in == "YES":
                raise Quarantined("burned-in annotation and no pixel cleaning enabled")
            modality = str(ds.get("Modality", "") or "").upper()
            text_prone = modality in TEXT_PRONE_MODALITIES or sop_class in SECONDARY_CAPTURE
            if burned_in != "NO" and text_prone:
                raise Quarantined(
                    f"{modality if modality in TEXT_PRONE_MODALITIES else 'secondary capture'} "
                    "image may carry burned-in text "
                    "and no pixel cleaning enabled"
                )
