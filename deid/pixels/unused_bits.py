"""Bits of native Pixel Data outside Bits Stored / High Bit: where retired overlays hid.

Old-style overlays (Overlay Bits Position non-zero) draw their bitmap, text included, into the
unused high bits of each sample; removing group 60xx leaves that bitmap in the pixels. The
header stage removes every overlay, so it also clears these bits: zero for unsigned samples,
the sign extension of the stored value for signed ones (the form readers that ignore Bits
Stored expect). Compressed pixel data is decoded, cleared and re-encoded losslessly only when
the object declares an old-style overlay (:func:`declares_overlay_in_pixels`): decoding every
compressed image would cost a header-only run more than the header itself. ``deid verify``
counts such bits in both (:func:`unused_bits_set`, :func:`decoded_unused_bits`).
"""

from __future__ import annotations

import io
import struct
from typing import TYPE_CHECKING

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

if TYPE_CHECKING:
    from deid.pixels.encode import Encoding

#: Bits Allocated, Bits Stored, High Bit, Pixel Representation (all US).
_LAYOUT_TAGS = (0x00280100, 0x00280101, 0x00280102, 0x00280103)
_PIXEL_DATA = 0x7FE00010


def _us(ds: Dataset, tag: int) -> int | None:
    """A US value of ``ds`` read straight from its raw bytes where it is still raw (decoding
    through pydicom is most of this module's cost in a header-only run)."""
    element = ds.get_item(tag, keep_deferred=True)
    if element is None:
        return None
    if isinstance(element, RawDataElement):
        if element.value is None or len(element.value) < 2:
            return None
        return int(struct.unpack("<H" if element.is_little_endian else ">H", element.value[:2])[0])
    value = element.value
    return int(value) if isinstance(value, int) else None


def _layout(ds: Dataset) -> tuple[int, int, int, bool] | None:
    """``(bits allocated, bits stored, lowest stored bit, signed)``, or ``None`` when every
    allocated bit is stored or the description is unusable."""
    allocated, stored, high, representation = (_us(ds, tag) for tag in _LAYOUT_TAGS)
    if allocated is None or stored is None:
        return None
    high = stored - 1 if high is None else high
    low = high + 1 - stored
    if allocated not in (8, 16, 32) or not 0 < stored < allocated or low < 0 or high >= allocated:
        return None
    return allocated, stored, low, representation == 1


def _pixel_bytes(ds: Dataset) -> bytes | memoryview | None:
    """The native pixel data's bytes; a view of the read buffer when the value is still
    deferred (no copy of a value the writer copies from that buffer anyway)."""
    element = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    buffer = getattr(ds, "buffer", None)
    if (
        isinstance(element, RawDataElement)
        and element.value is None
        and element.value_tell is not None
        and isinstance(buffer, io.BytesIO)
    ):
        return buffer.getbuffer()[element.value_tell : element.value_tell + element.length]
    value = ds.PixelData
    return value if isinstance(value, bytes) else None


def normalised(values, allocated: int, stored: int, low: int, signed: bool):
    """``values`` (unsigned integers of ``allocated`` bits) with every bit outside the stored
    range cleared, or set to the sign extension of a signed stored value."""
    import numpy as np

    mask = ((1 << stored) - 1) << low
    kept = values & values.dtype.type(mask)
    if not signed or low:
        return kept
    wide = kept.astype(np.int64)
    negative = (wide >> (stored - 1)) & 1 == 1
    wide[negative] -= 1 << stored
    return (wide & ((1 << allocated) - 1)).astype(values.dtype)


def _native_samples(ds: Dataset):
    """The native pixel data as unsigned samples and its layout, or ``None``."""
    import numpy as np

    syntax = getattr(ds.file_meta, "TransferSyntaxUID", None)
    if "PixelData" not in ds or syntax is None or syntax.is_compressed:
        return None
    layout = _layout(ds)
    if layout is None:
        return None
    data = _pixel_bytes(ds)
    if data is None:
        return None
    size = layout[0] // 8
    order = "<" if syntax.is_little_endian else ">"
    return np.frombuffer(data, f"{order}u{size}", count=len(data) // size), data, layout


def _any_set(values, allocated: int, stored: int, low: int, signed: bool) -> bool:
    """Whether some sample differs from its :func:`normalised` form (by its extremes when the
    stored bits start at bit 0: one pass, no copy)."""
    if low:
        return bool((normalised(values, allocated, stored, low, signed) != values).any())
    if not signed:
        return int(values.max()) >= 1 << stored
    as_signed = values.view(values.dtype.str.replace("u", "i"))
    return int(as_signed.min()) < -(1 << (stored - 1)) or int(as_signed.max()) >= 1 << (stored - 1)


def clear_unused_bits(ds: Dataset) -> bool:
    """Clear the bits outside the stored range of native pixel data in place.

    Returns
    -------
    bool
        Whether any sample changed (the pixel data is rewritten only then).
    """
    found = _native_samples(ds)
    if found is None:
        return False
    values, data, layout = found
    if not values.size or not _any_set(values, *layout):
        return False
    cleaned = normalised(values, *layout)
    ds.PixelData = cleaned.astype(values.dtype).tobytes() + bytes(data[cleaned.nbytes :])  # the file's byte order
    return True


def unused_bits_set(ds: Dataset) -> int:
    """How many native samples of ``ds`` carry bits outside the stored range (for ``verify``)."""
    found = _native_samples(ds)
    if found is None:
        return 0
    values, _, layout = found
    return int((normalised(values, *layout) != values).sum())


def declares_overlay_in_pixels(ds: Dataset) -> bool:
    """Whether ``ds`` declares an old-style overlay: an overlay group (60xx) whose Overlay Bit
    Position is not 0 and which has no Overlay Data of its own."""
    return any(
        _us(ds, group << 16 | 0x0102) and (group << 16 | 0x3000) not in ds for group in range(0x6000, 0x6020, 2)
    )


def clear_compressed_unused_bits(ds: Dataset) -> Encoding | None:
    """Clear the bits outside the stored range of compressed grey pixel data: decode every frame,
    clear, and write back losslessly (:func:`deid.pixels.encode.write_pixels`).

    Returns
    -------
    deid.pixels.encode.Encoding or None
        How the pixels were written back, or ``None`` when no sample carried such a bit (the
        pixel data is then untouched).

    Raises
    ------
    deid.stage.Quarantined
        If the pixel data cannot be decoded (the reason names the transfer syntax).
    """
    import numpy as np

    from deid.pixels.codecs import stored_frames
    from deid.pixels.encode import write_pixels

    layout = _layout(ds)
    if layout is None or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return None
    frames = list(stored_frames(ds, "clearing an old-style overlay"))
    if not any(decoded_unused_bits(frame, ds) for frame in frames):
        return None
    allocated, signed = layout[0], layout[3]
    kind = f"{'i' if signed else 'u'}{allocated // 8}"
    cleaned = np.stack([
        normalised((frame.astype(np.int64) & ((1 << allocated) - 1)).astype(f"u{allocated // 8}"), *layout).view(kind)
        for frame in frames
    ])
    source = ds.file_meta.TransferSyntaxUID
    return write_pixels(ds, cleaned if int(ds.get("NumberOfFrames", 1) or 1) > 1 else cleaned[0], source)


def may_have_unused_bits(ds: Dataset) -> bool:
    """Whether the pixel description of ``ds`` leaves bits of a sample outside Bits Stored."""
    return _layout(ds) is not None


def decoded_unused_bits(values, ds: Dataset) -> int:
    """How many samples of decoded pixel data carry bits outside the stored range of ``ds``.

    Parameters
    ----------
    values
        The samples as decoded, bits outside Bits Stored kept
        (a frame of :func:`deid.pixels.codecs.stored_frames`), signed or unsigned.
    ds
        The dataset whose Bits Allocated, Bits Stored, High Bit and Pixel Representation
        describe them.

    Returns
    -------
    int
        The number of such samples; 0 when every allocated bit is stored.
    """
    import numpy as np

    layout = _layout(ds)
    if layout is None or values.dtype.kind not in "ui":
        return 0
    allocated = layout[0]
    unsigned = (values.astype(np.int64) & ((1 << allocated) - 1)).astype(f"u{allocated // 8}")
    return int((normalised(unsigned, *layout) != unsigned).sum())

