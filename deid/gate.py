"""The gate: refuse objects that the stages in force cannot make safe."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import Dataset

from deid.header.profiles import Profile
from deid.stage import Instance, Quarantined

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
    refusals
        What only stages that are not in force could make safe, each as ``(needs_stage, reason,
        description)``: a predicate on the dataset, the quarantine reason, and what is refused
        (:func:`deid.registry.refusals`).
    """

    name = "gate"

    def __init__(self, profile: Profile, refusals: Sequence[tuple[Callable[[Dataset], bool], str, str]] = ()) -> None:
        self.profile = profile
        self.refusals = tuple(refusals)

    def describe(self) -> str:
        refused = "".join(f", and {description}" for _, _, description in self.refusals)
        return (
            "quarantine encapsulated documents, unknown SOP classes, SR content without "
            f"Clean Structured Content{refused}"
        )

    def __call__(self, instance: Instance) -> None:
        ds = instance.ds
        sop_class = str(ds.get("SOPClassUID", "") or getattr(ds.file_meta, "MediaStorageSOPClassUID", ""))
        if not sop_class or not ds.get("SOPInstanceUID"):
            raise Quarantined("missing SOP Class UID or SOP Instance UID")
        if sop_class in ENCAPSULATED_DOCUMENTS:
            raise Quarantined("encapsulated document: its payload cannot be de-identified")
        if sop_class not in UID_dictionary:
            raise Quarantined("unknown or private SOP class: no rules know what it may hold")
        if "ContentSequence" in ds and not self.profile.has("clean_structured_content"):
            raise Quarantined("structured content: release it with --option clean_structured_content")
        for needs_stage, reason, _ in self.refusals:
            if needs_stage(ds):
                raise Quarantined(reason)
