"""The provenance stage, always the last: it writes into the header what the stages did, from the
facts they recorded on the :class:`~deid.stage.Instance`, so that each claim has one writer.

- The header stage's :class:`~deid.stage.Method`: Patient Identity Removed, De-identification
  Method and its CID 7050 code sequence, Longitudinal Temporal Information Modified (PS3.15 E.1).
- Burned-in text blanked: Burned In Annotation ``NO``.
- Each :class:`~deid.stage.Derivation`: Image Type value 1 ``DERIVED``, Derivation Description
  and Derivation Code Sequence (PS3.3 C.7.6.1).
- Either of the two: CID 7050 113101 Clean Pixel Data Option.
- Pixels decoded from a lossy transfer syntax and written back: Lossy Image Compression ``01``.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from deid import __version__
from deid.codes import CodedConcept
from deid.stage import Derivation, Instance, Method

#: CID 7050 Clean Pixel Data Option.
CLEAN_PIXEL_DATA = CodedConcept("113101", "DCM", "Clean Pixel Data Option")
#: Longitudinal Temporal Information Modified for each way of keeping dates (removed otherwise).
_LONGITUDINAL = {"full": "UNMODIFIED", "modified": "MODIFIED"}


class ProvenanceStage:
    """Write every claim the facts on an :class:`~deid.stage.Instance` support; it changes
    nothing else, and is not listed among the stages that changed the object."""

    name = "provenance"

    def describe(self) -> str:
        return (
            "claim in the header what the stages did: Patient Identity Removed, De-identification "
            "Method and CID 7050 codes, Burned In Annotation, derivation, Lossy Image Compression"
        )

    def __call__(self, instance: Instance, /) -> None:
        ds = instance.ds
        if instance.method is not None:
            claim_method(ds, instance.method, pixels_cleaned=instance.text_masked or bool(instance.derivations))
        if instance.text_masked:
            ds.BurnedInAnnotation = "NO"
        for derivation in instance.derivations:
            claim_derivation(ds, derivation)
        if instance.lossy_source:
            ds.LossyImageCompression = "01"  # the pixels' history stays true


def claim_method(ds: Dataset, method: Method, *, pixels_cleaned: bool) -> None:
    """The PS3.15 de-identification attributes of ``method``; ``pixels_cleaned`` adds 113101 (once)."""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = f"deid {__version__}: profile {method.profile}"[:64]
    codes = Sequence([code.item() for code in method.codes])
    if pixels_cleaned and not any(CLEAN_PIXEL_DATA.matches(item) for item in codes):
        codes.append(CLEAN_PIXEL_DATA.item())
    ds.DeidentificationMethodCodeSequence = codes
    ds.LongitudinalTemporalInformationModified = _LONGITUDINAL.get(method.dates or "", "REMOVED")


def claim_derivation(ds: Dataset, derivation: Derivation) -> None:
    """Say that the pixels were derived, each statement once: Image Type value 1 becomes DERIVED
    (the other values stay; DERIVED\\SECONDARY when there was none), Derivation Description gains
    the description and Derivation Code Sequence the code."""
    image_type = ds.get("ImageType")
    values = [] if not image_type else [image_type] if isinstance(image_type, str) else list(image_type)
    ds.ImageType = ["DERIVED", *values[1:]] if values else ["DERIVED", "SECONDARY"]
    previous = str(ds.get("DerivationDescription", "") or "")
    if derivation.description not in previous:
        description = derivation.description
        ds.DerivationDescription = f"{previous}; {description}"[-1024:] if previous else description
    codes = ds.get("DerivationCodeSequence")
    if codes is None:
        ds.DerivationCodeSequence = codes = Sequence()
    if not any(derivation.code.matches(item) for item in codes):
        codes.append(derivation.code.item())


__all__ = ["ProvenanceStage", "CLEAN_PIXEL_DATA", "claim_method", "claim_derivation"]
