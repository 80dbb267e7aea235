"""The interface every pipeline stage shares: it takes an :class:`Instance` and changes it in place.

A stage that finds an object it cannot make safe raises :class:`Quarantined` with a reason;
the pipeline then writes nothing for that object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from deid.codes import CodedConcept

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


@dataclass(frozen=True)
class Region:
    """A region of an image a pixel stage looked at.

    Attributes
    ----------
    layer
        The detection layer that found it: ``rules`` (known region), ``ultrasound`` (outside the
        declared regions) or ``ocr``.
    box
        ``(x, y, width, height)`` in full-resolution pixels.
    text
        What OCR read there (PHI; empty for the known-region layers).
    masked
        Whether it was blanked; ``False`` for a line kept in ``sensitive`` mode (a marker).
    """

    layer: str
    box: tuple[int, int, int, int]
    text: str = ""
    masked: bool = True


class Quarantined(Exception):
    """The object cannot be made safe; the message is the reason and holds no PHI."""


@dataclass(frozen=True)
class HeaderResult:
    """What the header stage hands to the later stages and to the writer.

    Attributes
    ----------
    uid_pairs
        Original to new UIDs replaced in the object (for the crosswalk and the output path).
    patient_pair
        ``(original Patient ID, pseudonym)``.
    identifying
        The object's own identifying values as a pattern, taken before the header stage removed
        them, for stages that look for them in pixels (``None``: the object had none).
    """

    uid_pairs: dict[str, str]
    patient_pair: tuple[str, str]
    identifying: re.Pattern[str] | None


@dataclass(frozen=True)
class Method:
    """How the header stage de-identified an object.

    Attributes
    ----------
    profile
        The profile's name.
    codes
        CID 7050 codes of the profile and its options, in claim order.
    dates
        How longitudinal dates were kept: ``full``, ``modified``, or ``None`` (removed).
    """

    profile: str
    codes: tuple[CodedConcept, ...]
    dates: str | None


@dataclass(frozen=True)
class Derivation:
    """What a whole-image stage made of the pixels.

    Attributes
    ----------
    description
        What Derivation Description gains, e.g. ``deid: learned deformation (...)``.
    code
        The CID 7203 code of the derivation.
    """

    description: str
    code: CodedConcept


@dataclass
class Instance:
    """One SOP instance on its way through the stages.

    Attributes
    ----------
    ds
        The dataset, changed in place by the stages.
    header
        What the header stage found and replaced; ``None`` until it has run.
    stages
        Names of the stages that changed the object, in order.
    pixels_changed
        Whether a stage changed the pixel data.
    notes
        What the stages want the manifest to say of the object (no PHI).
    regions
        Regions a pixel stage found (masked or kept), for the audit and the review page.
    before, after
        The first frame's stored values as the first pixel stage found it and as the last one
        left it (``after`` only when the pixels changed), for the review page.
    method
        How the header stage de-identified the object; ``None`` until it has run.
    text_masked
        Whether the text stage blanked burned-in text.
    derivations
        What the whole-image stages made of the pixels, in order.
    lossy_source
        Whether a pixel stage wrote back pixels decoded from a lossy transfer syntax.

    The last four are facts for the provenance stage (:mod:`deid.provenance`), which writes
    every claim they support into the header.
    """

    ds: Dataset
    header: HeaderResult | None = None
    stages: list[str] = field(default_factory=list)
    pixels_changed: bool = False
    notes: list[str] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    before: Any = None
    after: Any = None
    method: Method | None = None
    text_masked: bool = False
    derivations: list[Derivation] = field(default_factory=list)
    lossy_source: bool = False

    def looked_at(self, first_frame: Any) -> None:
        """A pixel stage examined the pixels: keep the first frame as it found it (the first
        stage's view wins)."""
        if self.before is None:
            self.before = first_frame

    def changed_pixels(self, stage: str, before: Any, after: Any, *, lossy_source: bool) -> None:
        """Stage ``stage`` replaced the pixels; ``before`` and ``after`` are its first frame,
        ``lossy_source``: the pixels it wrote back were decoded from a lossy transfer syntax."""
        self.looked_at(before)
        self.after = after
        self.pixels_changed = True
        self.lossy_source = self.lossy_source or lossy_source
        self.stages.append(stage)


class Stage(Protocol):
    """A pipeline stage."""

    name: str

    def __call__(self, instance: Instance, /) -> None:
        """Change ``instance`` in place, or raise :class:`Quarantined`."""

    def describe(self) -> str:
        """One line on what the stage does, for ``deid run --dry-run`` and the docs."""
