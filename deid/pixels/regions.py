"""Layer 1 of burned-in text detection: regions known from header values, and the parts of an
ultrasound image outside its declared regions."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache

from pydicom.dataset import Dataset

from deid.shipped import rules_dir

#: A box as (x, y, width, height) in full-resolution pixels.
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Signature:
    """Header values that identify a device whose screens carry text at known places."""

    name: str
    regions: tuple[tuple[int, int, int, int], ...]
    modality: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    rows: int | None = None
    columns: int | None = None
    image_type: str | None = None

    def matches(self, ds: Dataset) -> bool:
        def has(keyword: str, needle: str | None) -> bool:
            return needle is None or needle.upper() in str(ds.get(keyword, "") or "").upper()

        image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
        return (
            (self.modality is None or str(ds.get("Modality", "")) == self.modality)
            and has("Manufacturer", self.manufacturer)
            and has("ManufacturerModelName", self.model)
            and (self.rows is None or int(ds.get("Rows", 0)) == self.rows)
            and (self.columns is None or int(ds.get("Columns", 0)) == self.columns)
            and (self.image_type is None or self.image_type.upper() in image_type)
        )


@dataclass(frozen=True)
class RegionRules:
    """The known-region rules of rules/pixel/*.toml."""

    signatures: tuple[Signature, ...]
    mask_outside_ultrasound_regions: bool

    def boxes(self, ds: Dataset) -> list[tuple[str, Box]]:
        """``(layer, box)`` for every known region of ``ds``."""
        rows, columns = int(ds.Rows), int(ds.Columns)
        found = []
        for signature in self.signatures:
            if signature.matches(ds):
                found += [("rules", _clip(region, rows, columns)) for region in signature.regions]
        if self.mask_outside_ultrasound_regions:
            found += [("ultrasound", box) for box in outside_ultrasound_regions(ds)]
        return [(layer, box) for layer, box in found if box[2] > 0 and box[3] > 0]


def _clip(region: tuple[int, int, int, int], rows: int, columns: int) -> Box:
    x, y, width, height = region
    x = columns + x if x < 0 else x
    y = rows + y if y < 0 else y
    x0, y0 = max(0, x), max(0, y)
    return x0, y0, min(columns, x + width) - x0, min(rows, y + height) - y0


def outside_ultrasound_regions(ds: Dataset) -> list[Box]:
    """Boxes covering everything outside the bounding box of the declared ultrasound regions
    (none when the object declares no region)."""
    regions = ds.get("SequenceOfUltrasoundRegions") or []
    if not regions:
        return []
    rows, columns = int(ds.Rows), int(ds.Columns)
    x0 = max(0, min(int(r.RegionLocationMinX0) for r in regions))
    y0 = max(0, min(int(r.RegionLocationMinY0) for r in regions))
    x1 = min(columns - 1, max(int(r.RegionLocationMaxX1) for r in regions))
    y1 = min(rows - 1, max(int(r.RegionLocationMaxY1) for r in regions))
    return [
        (0, 0, columns, y0),
        (0, y1 + 1, columns, rows - y1 - 1),
        (0, y0, x0, y1 - y0 + 1),
        (x1 + 1, y0, columns - x1 - 1, y1 - y0 + 1),
    ]


@lru_cache(maxsize=1)
def load_region_rules() -> RegionRules:
    """Read every rules/pixel/*.toml."""
    signatures: list[Signature] = []
    outside = False
    for path in sorted((rules_dir() / "pixel").glob("*.toml")):
        with path.open("rb") as handle:
            data = tomllib.load(handle)
        outside = outside or data.get("ultrasound", {}).get("mask_outside_declared_regions", False)
        for entry in data.get("signature", []):
            regions = tuple((int(x), int(y), int(w), int(h)) for x, y, w, h in entry.pop("regions"))
            signatures.append(Signature(regions=regions, **entry))
    return RegionRules(tuple(signatures), outside)
