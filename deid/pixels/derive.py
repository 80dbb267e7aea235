"""What the whole-image pixel stages (deformation, DP-Pix) share: the map between stored values
and the [0, 1] display-oriented scale their transforms work on, writing the result back, and
recording the derivation (the provenance stage writes it into the header)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from deid.codes import CodedConcept
from deid.pixels.codecs import pixel_array
from deid.pixels.eligibility import Eligibility
from deid.pixels.encode import write_pixels
from deid.stage import Derivation, Instance, Quarantined

#: CID 7203 Image Derivation: the image is resampled on a new grid (a warp, or cells).
SPATIAL_RESAMPLING = CodedConcept("113085", "DCM", "Spatial resampling")


@dataclass(frozen=True)
class UnitScale:
    """The affine map from one image's stored values to [0, 1], bright = dense.

    Attributes
    ----------
    low, high
        The image's smallest and largest stored values (they map to the ends of [0, 1]).
    invert
        MONOCHROME1: the scale is turned over so the transform sees MONOCHROME2.
    floor, ceiling
        The range Bits Stored and Pixel Representation allow.
    """

    low: int
    high: int
    invert: bool
    floor: int
    ceiling: int

    @classmethod
    def of(cls, stored: np.ndarray, ds: Dataset) -> UnitScale:
        bits = int(ds.BitsStored)
        signed = int(ds.PixelRepresentation) == 1
        floor, ceiling = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        invert = str(ds.PhotometricInterpretation) == "MONOCHROME1"
        return cls(int(stored.min()), int(stored.max()), invert, floor, ceiling)

    @property
    def span(self) -> int:
        return max(self.high - self.low, 1)

    def to_unit(self, stored: np.ndarray) -> np.ndarray:
        """Stored values as float32 in [0, 1], MONOCHROME2 orientation."""
        unit = (stored.astype(np.float64) - self.low) / self.span
        return (1.0 - unit if self.invert else unit).astype(np.float32)

    def to_stored(self, unit: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """[0, 1] values back to stored values of ``dtype``: rounded, clipped to the image's own
        range and to what Bits Stored allows."""
        unit = np.clip(unit.astype(np.float64), 0.0, 1.0)
        values = np.rint(self.low + (1.0 - unit if self.invert else unit) * self.span)
        values = np.clip(values, max(self.low, self.floor), min(self.high, self.ceiling))
        return values.astype(dtype)


class WholeImageStage:
    """Base of the stages that replace an eligible radiograph's pixels by a function of them.

    A subclass sets :attr:`name` and implements :meth:`transform`, :meth:`derivation` and
    :meth:`note`. Objects that the rules do not select pass through untouched; an object whose
    pixels cannot be decoded or transformed is quarantined.

    Parameters
    ----------
    eligibility
        Which objects the stage changes.
    """

    name = "whole-image"
    #: CID 7203 code of the derivation.
    code = SPATIAL_RESAMPLING

    def __init__(self, eligibility: Eligibility) -> None:
        self.eligibility = eligibility

    def transform(self, image: np.ndarray, item: Instance) -> np.ndarray:
        """The new image: ``image`` is float32 (rows, columns) in [0, 1], MONOCHROME2."""
        raise NotImplementedError

    def derivation(self) -> str:
        """What Derivation Description gains, e.g. ``deid: learned deformation (...)``."""
        raise NotImplementedError

    def note(self) -> str:
        """What the manifest says of a changed object (no PHI)."""
        raise NotImplementedError

    def __call__(self, item: Instance) -> None:
        ds = item.ds
        if not self.eligibility.matches(ds):
            return
        stored = pixel_array(ds, f"the {self.name} stage")
        scale = UnitScale.of(stored, ds)
        try:
            image = self.transform(scale.to_unit(stored), item)
        except Exception as exc:  # noqa: BLE001 - the transform failed: never let the object through
            raise Quarantined(f"{self.name} stage failed ({type(exc).__name__})") from None
        if image.shape != stored.shape or not np.isfinite(image).all():
            raise Quarantined(f"{self.name} stage returned an image of another shape or non-finite values")
        changed = scale.to_stored(image, stored.dtype)
        encoding = write_pixels(ds, changed, ds.file_meta.TransferSyntaxUID)
        item.derivations.append(Derivation(self.derivation(), self.code))
        item.notes.append(f"{self.note()}; {encoding.note}")
        item.changed_pixels(self.name, stored, changed, lossy_source=encoding.lossy_source)

