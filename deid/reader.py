"""Reading one input: parse a file's bytes into a dataset and refuse what is broken.

:func:`read_instance` is the whole read as ``deid run`` does it; the checks it runs are public
so that they can be reused and extended one by one. A broken file raises
:class:`~deid.stage.Quarantined` with a reason that holds no PHI.
"""

from __future__ import annotations

import io
import warnings
import zlib

from pydicom import dcmread
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
)
from pydicom.valuerep import VR

from deid.config import MAX_OBJECT_SIZE
from deid.stage import Quarantined

#: Top-level values longer than this are read only when a stage asks for them.
DEFER_SIZE = 64 * 1024



def read_instance(data: bytes, max_object_size: int = MAX_OBJECT_SIZE) -> FileDataset | None:
    """Read one input file's bytes and check them, as ``deid run`` does.

    Parameters
    ----------
    data
        The whole file.
    max_object_size
        The most, in bytes, a deflated data set may inflate to and pixel data may decode to.

    Returns
    -------
    FileDataset or None
        The dataset, its file meta naming the transfer syntax it was read with; ``None`` when
        ``data`` is not DICOM. Values over :data:`DEFER_SIZE` stay in ``data`` until read.

    Raises
    ------
    Quarantined
        If the file is DICOM but unreadable, truncated, damaged in its ``DICM`` prefix, larger
        than ``max_object_size`` once inflated or decoded, or its pixel data is incomplete or
        encapsulated in an unknown transfer syntax.
    """
    check_inflation(data, max_object_size)
    ds = read_dataset(data)
    if ds is None:
        return None
    settle_transfer_syntax(ds)
    check_value_representations(ds)
    check_decoded_size(ds, max_object_size)
    check_pixels(ds, len(data))
    return ds


#: The value representations of PS3.5, as pydicom names them.
_KNOWN_VRS = frozenset(vr.value for vr in VR)
#: VRs whose values are short runs of printable ASCII characters (PS3.5 6.2).
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"})
#: Bytes no value of those VRs holds: controls (element headers and lengths are full of them) and
#: bytes above ASCII; UI values may end in one NUL.
_NOT_ASCII = bytes(range(0x20)) + bytes(range(0x7F, 0x100))


def check_value_representations(ds: Dataset) -> None:
    """Quarantine a data set with a top-level element whose value representation is not one of
    DICOM's, or whose value of an ASCII VR holds control or non-ASCII bytes: a length damaged so
    that the value swallows the elements after it, which a kept element would copy into the
    release, identifying values and all."""
    for tag in ds.keys():
        element = ds.get_item(tag, keep_deferred=True)
        vr = getattr(element, "VR", None)
        if vr is not None and vr not in _KNOWN_VRS:
            raise Quarantined(f"damaged element {tag}: its value representation is not one of DICOM's")
        if not isinstance(element, RawDataElement) or element.length in (0, 0xFFFFFFFF):
            continue
        if vr in (None, "UN"):  # implicit VR, or unknown to the writer: the dictionary's
            vr = dictionary_VR(tag) if dictionary_has_tag(tag) else None
        if vr in _ASCII_VRS:
            value = element.value
            if value is None or value.rstrip(b"\x00").translate(None, _NOT_ASCII) != value.rstrip(b"\x00"):
                raise Quarantined(f"damaged element {tag}: its value is not a valid {vr}")


def check_inflation(data: bytes, limit: int) -> None:
    """Quarantine a deflated data set that inflates to more than ``limit`` bytes, inflating it
    a megabyte at a time and keeping none of it (pydicom inflates the whole stream at once).
    Anything that is not a readable deflated file is left to :func:`read_dataset`."""
    fp = io.BytesIO(data)
    try:
        read_preamble(fp, False)
        deflated = _read_file_meta_info(fp).get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    except Exception:  # noqa: BLE001 - no readable file meta: read_dataset decides
        return
    if not deflated:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending: bytes | memoryview = memoryview(data)[fp.tell() :]
    inflated = 0
    try:
        while pending and not inflater.eof:
            inflated += len(inflater.decompress(pending, 1 << 20))
            if inflated > limit:
                raise Quarantined(f"decompression bomb: the deflated data set inflates to more than {_size(limit)}")
            pending = inflater.unconsumed_tail
    except zlib.error:
        return


def check_decoded_size(ds: Dataset, limit: int) -> None:
    """Quarantine pixel data whose declared size (rows, columns, frames, samples, bits) is more
    than ``limit`` bytes: a codec would allocate it before decoding a byte."""
    if "PixelData" not in ds:
        return
    try:
        size = (
            int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
            * int(ds.get("NumberOfFrames", 1) or 1) * ((int(ds.BitsAllocated) + 7) // 8)
        )
    except (AttributeError, TypeError, ValueError):
        return  # check_pixels and the pixel stages refuse an image without a description
    if size > limit:
        raise Quarantined(f"decompression bomb: the pixel data declares {_size(size)}, more than {_size(limit)}")


def _size(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB" if size >= 1024**3 else f"{size / 1024**2:.0f} MiB"


def read_dataset(data: bytes) -> FileDataset | None:
    """Read a DICOM file's bytes; return ``None`` for non-DICOM; raise Quarantined when broken.

    Top-level values over :data:`DEFER_SIZE` (the pixel data, mostly) are left in ``data``:
    read on first access, and otherwise copied from ``data`` into the output as they are.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = dcmread(io.BytesIO(data), defer_size=DEFER_SIZE)
    except InvalidDicomError:
        pass
    except Exception as exc:  # noqa: BLE001 - any parser failure means unreadable
        raise Quarantined(f"unreadable DICOM ({type(exc).__name__})") from None
    else:
        if any("End of file reached" in str(w.message) for w in caught):
            raise Quarantined("truncated file")
        check_file_meta(ds)
        check_complete(ds, len(data))
        return ds
    try:  # no preamble: accept only if it parses as a data set with an SOP class
        ds = dcmread(io.BytesIO(data), force=True, defer_size=DEFER_SIZE)
        found = "SOPClassUID" in ds
    except Exception:  # noqa: BLE001
        found = False
    if found:
        check_file_meta(ds)
        return ds
    if has_damaged_prefix(data):
        raise Quarantined("damaged DICOM prefix: no 'DICM' at byte 128, though file meta follows")
    return None


def has_damaged_prefix(data: bytes) -> bool:
    """Whether ``data`` is a DICOM file whose ``DICM`` magic (bytes 128-131) is damaged: with
    the magic mended, it reads as a file with file meta naming an SOP class."""
    if len(data) < 140 or data[128:132] == b"DICM" or data[132:134] != b"\x02\x00":
        return False
    try:
        ds = dcmread(io.BytesIO(data[:128] + b"DICM" + data[132:]), stop_before_pixels=True, defer_size=DEFER_SIZE)
    except Exception:  # noqa: BLE001
        return False
    return bool(ds.file_meta.get("MediaStorageSOPClassUID") or "SOPClassUID" in ds)


def check_file_meta(ds: Dataset) -> None:
    """Quarantine a file whose File Meta Information does not decode (a damaged VR or value), and
    make its Transfer Syntax UID a UID whatever VR the file gave it."""
    try:
        list(ds.file_meta)  # decodes every element
        syntax = ds.file_meta.get("TransferSyntaxUID")
    except Exception:  # noqa: BLE001 - whatever pydicom raises, the meta is damaged
        raise Quarantined("damaged file meta information") from None
    if syntax is None:
        return
    if not isinstance(syntax, str):
        raise Quarantined("damaged file meta information")
    ds.file_meta.TransferSyntaxUID = UID(syntax)


def check_complete(ds: Dataset, size: int) -> None:
    """Quarantine a file whose last element is cut short or that has unparsed bytes at its end."""
    if not ds.keys() or getattr(ds.file_meta, "TransferSyntaxUID", "").endswith("1.2.1.99"):
        return  # deflated: the stream length says nothing about the file length
    last = ds.get_item(list(ds.keys())[-1], keep_deferred=True)
    if not isinstance(last, RawDataElement) or last.length == 0xFFFFFFFF or last.value_tell is None:
        return
    if stored_length(last, size) < last.length or last.value_tell + last.length < size:
        raise Quarantined("truncated file")


def settle_transfer_syntax(ds: Dataset) -> None:
    """Make the file meta name the transfer syntax the data set was really read with.

    Raises
    ------
    Quarantined
        If the pixel data is encapsulated in a transfer syntax pydicom does not know.
    """
    transfer_syntax = getattr(ds.file_meta, "TransferSyntaxUID", None)
    if transfer_syntax is not None and transfer_syntax.is_transfer_syntax:
        return
    if "PixelData" in ds and ds["PixelData"].is_undefined_length:
        raise Quarantined("encapsulated pixel data in an unknown transfer syntax")
    implicit, little = ds.original_encoding
    ds.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )


def check_pixels(ds: Dataset, size: int) -> None:
    """Quarantine objects whose native pixel data is shorter than the header says (``size``:
    the file's length)."""
    if "PixelData" not in ds or ds.file_meta.TransferSyntaxUID.is_compressed:
        return
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        expected = (
            ds.Rows * ds.Columns * ds.SamplesPerPixel * frames * ds.BitsAllocated + 7
        ) // 8
    except (AttributeError, TypeError, ValueError):
        raise Quarantined("pixel data without a valid image pixel description") from None
    if stored_length(ds.get_item(0x7FE00010, keep_deferred=True), size) < expected:
        raise Quarantined("truncated pixel data")


def is_media_directory(ds: Dataset) -> bool:
    """Whether ``ds`` is a DICOMDIR (Media Storage Directory), which indexes files rather than
    holding an object: it is skipped, never copied (its paths and names would be the inputs')."""
    sop_class = getattr(ds.file_meta, "MediaStorageSOPClassUID", None) or ds.get("SOPClassUID", "")
    return str(sop_class) == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds


def stored_length(element: object, size: int) -> int:
    """How many bytes of ``element``'s value a file of ``size`` bytes holds; a deferred value
    is measured where it lies, not read."""
    if isinstance(element, RawDataElement) and element.value is None and element.value_tell is not None:
        return max(0, min(element.length, size - element.value_tell))
    return len(element.value or b"")  # type: ignore[attr-defined]


__all__ = [
    "DEFER_SIZE",
    "read_instance",
    "check_inflation",
    "check_decoded_size",
    "has_damaged_prefix",
    "read_dataset",
    "check_file_meta",
    "check_complete",
    "check_value_representations",
    "settle_transfer_syntax",
    "check_pixels",
    "is_media_directory",
    "stored_length",
]
