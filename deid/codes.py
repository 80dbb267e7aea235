"""Coded concepts: the one shape of every code the run reads from rules or writes into a header."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


@dataclass(frozen=True)
class CodedConcept:
    """A coded concept (PS3.3 Table 8.8-1, the Basic Code Sequence Macro).

    Attributes
    ----------
    value
        Code Value, e.g. ``113101``.
    scheme
        Coding Scheme Designator, e.g. ``DCM``.
    meaning
        Code Meaning, e.g. ``Clean Pixel Data Option``.
    """

    value: str
    scheme: str
    meaning: str

    def item(self) -> Dataset:
        """A new code sequence item holding the concept."""
        from pydicom.dataset import Dataset

        item = Dataset()
        item.CodeValue = self.value
        item.CodingSchemeDesignator = self.scheme
        item.CodeMeaning = self.meaning
        return item

    def matches(self, item: Dataset) -> bool:
        """Whether the code sequence item ``item`` holds this concept (value and scheme; the
        meaning is display text)."""
        return (item.get("CodeValue"), item.get("CodingSchemeDesignator")) == (self.value, self.scheme)


__all__ = ["CodedConcept"]
