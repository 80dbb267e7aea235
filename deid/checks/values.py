"""``deid verify``: identifying values of the inputs in the values of a release that nobody reads.

The header check searches the bytes of each release file before its pixel data. This one reads
each DICOM output and looks, at every depth, into the values a viewer never decodes: elements
stored as UN (a UN value that holds a sequence is read as one), private elements, and whatever
lies after the pixel data (private groups above 7FE0, trailing padding). Each finding names the
element it hides in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.values import convert_SQ

from deid.header.unknown import in_dictionary
from deid.verify import Finding, IdentifierIndex, Release, register_check

#: The first bytes of an item in little endian: a UN value that starts so holds a sequence.
_ITEM = b"\xfe\xff\x00\xe0"
#: Pixel data and everything after it.
_PIXEL_DATA = 0x7FE00010


def hidden_values(ds: Dataset, path: str = "") -> Iterator[tuple[str, bytes]]:
    """``(where, bytes)`` of every value of ``ds`` that nobody reads, at every depth: UN values,
    private values, public tags outside the dictionary, and elements after the pixel data.
    ``where`` is the element's tag path (no value)."""
    for tag in list(ds.keys()):
        if tag == _PIXEL_DATA:
            continue  # image samples: the pixel checks look at them
        raw = ds.get_item(tag)
        where = f"{path}({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if raw.VR == "SQ":
            for index, item in enumerate(ds[tag].value):
                yield from hidden_values(item, f"{where}[{index}].")
            continue
        if not (tag.is_private or raw.VR == "UN" or not in_dictionary(tag) or tag > _PIXEL_DATA):
            continue
        value = raw.value if isinstance(raw, RawDataElement) else ds[tag].value
        if isinstance(value, str):
            value = value.encode("utf-8", "replace")
        elif not isinstance(value, bytes):
            value = str(value).encode("utf-8", "replace")
        if value.startswith(_ITEM):
            items: list[Dataset] = []
            with contextlib.suppress(Exception):  # not a sequence after all: search the bytes
                items = list(convert_SQ(value, True, True))
            for index, item in enumerate(items):
                yield from hidden_values(item, f"{where}[{index}].")
            if items:
                continue
        yield where, value


@register_check
class HiddenValuesCheck:
    """Identifying values of the inputs in UN, private and after-pixel-data values of the release."""

    name = "hidden-values"

    def describe(self) -> str:
        return (
            "identifying values of the inputs in UN, private and unknown elements and after the pixel data, "
            "at every depth"
        )

    def __call__(self, release: Release) -> Iterable[Finding]:
        index = IdentifierIndex(release.identifiers)
        read = 0
        for relative in release.output_files():
            ds = release.read_output(relative)
            if ds is None:
                continue
            read += 1
            origin = release.origins.get(relative)
            for where, value in hidden_values(ds):
                for identifier in index.found_in(value, origin):
                    yield Finding(self.name, identifier.kind, identifier.source, relative,
                                  f"unread value {where}", identifier.value, identifier.origin, identifier.vr)
        release.count("release objects read for unread values", read)
