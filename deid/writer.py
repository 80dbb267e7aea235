"""Write de-identified objects: fresh file meta, zero preamble, pseudonymous path, atomic replace."""

from __future__ import annotations

import hashlib
import io
import struct
from pathlib import Path

from pydicom import config, dcmwrite
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from deid import __version__
from deid.pseudonyms import Pseudonymizer
from deid.reader import stored_length
from deid.stage import Instance
from deid.staging import write_staged

#: Implementation Class UID of deid (a 2.25 UUID-derived root).
IMPLEMENTATION_CLASS_UID = UID("2.25.264350963127412779040394316718357813137")
IMPLEMENTATION_VERSION_NAME = f"DEID_{__version__}"[:16]


def output_relpath(instance: Instance, pseudo: Pseudonymizer) -> Path:
    """``patient/study/series/instance.dcm``, built only from pseudonyms and new UIDs.

    A value the profile kept (a site rule keeping Patient ID, Retain UIDs) never names a path:
    it is replaced there by a keyed token.

    Raises
    ------
    ValueError
        If the header stage has not run on ``instance``.
    """
    if instance.header is None:
        raise ValueError("the header stage has not run: no pseudonymous path")
    ds = instance.ds
    patient = str(ds.get("PatientID", "") or "")
    if not patient or patient != instance.header.patient_pair[1]:
        patient = pseudo.token(f"path:{patient}")
    new_uids = set(instance.header.uid_pairs.values())

    def component(uid: str) -> str:
        return uid if uid in new_uids else pseudo.uid(f"path:{uid}")

    return (
        Path(patient)
        / component(str(ds.get("StudyInstanceUID", "")))
        / component(str(ds.get("SeriesInstanceUID", "")))
        / f"{component(str(ds.SOPInstanceUID))}.dcm"
    )


def replace_file_meta(ds: FileDataset) -> None:
    """Replace the preamble and the File Meta Information (PS3.15 E.1.1).

    The values are ours or already in the data set, so they are not validated again (which
    costs more than building the group).
    """
    values = (
        (0x00020001, "OB", b"\x00\x01"),
        (0x00020002, "UI", ds.SOPClassUID),
        (0x00020003, "UI", ds.SOPInstanceUID),
        (0x00020010, "UI", ds.file_meta.TransferSyntaxUID),
        (0x00020012, "UI", IMPLEMENTATION_CLASS_UID),
        (0x00020013, "SH", IMPLEMENTATION_VERSION_NAME),
    )
    elements = [DataElement(tag, vr, value, validation_mode=config.IGNORE) for tag, vr, value in values]
    ds.file_meta = FileMetaDataset({element.tag: element for element in elements})
    ds.preamble = b"\x00" * 128


def file_meta_bytes(meta: FileMetaDataset) -> bytes:
    """The File Meta Information group as :func:`replace_file_meta` builds it, encoded as
    pydicom's ``write_file_meta_info`` would (Explicit VR Little Endian, group length first),
    without its copies and checks."""
    body = b"".join(
        _pack(tag, meta[tag].VR, _as_bytes(meta[tag].value)) for tag in sorted(meta.keys()) if tag.element
    )
    return _pack(0x00020000, "UL", struct.pack("<I", len(body))) + body


def _as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("ascii")


def _pack(tag: int, vr: str, data: bytes, implicit: bool = False) -> bytes:
    """One element: its header and its value padded to even length (UI and OB with NUL)."""
    if len(data) % 2:
        data += b"\x00" if vr in ("UI", "OB") else b" "
    group, number = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack("<HHI", group, number, len(data)) + data
    if vr in _LONG_HEADER_VRS:
        return struct.pack("<HH2s2xI", group, number, vr.encode("ascii"), len(data)) + data
    return struct.pack("<HH2sH", group, number, vr.encode("ascii"), len(data)) + data


def _read_in_another_encoding(ds: FileDataset) -> bool:
    """Whether raw elements were read in an encoding other than the one to write (a changed
    transfer syntax, or an explicit-VR syntax whose file held implicit-VR elements)."""
    syntax = ds.file_meta.TransferSyntaxUID
    if ds.original_encoding != (syntax.is_implicit_VR, syntax.is_little_endian):
        return True
    return not syntax.is_implicit_VR and any(getattr(element, "VR", "") is None for element in ds.values())


#: Explicit VRs whose element header is 12 bytes long (PS3.5 7.1.2).
_LONG_HEADER_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})


def _encode(ds: FileDataset, source: bytes | None = None) -> list[bytes | memoryview]:
    """The file's bytes, as pieces to write one after the other: zero preamble, ``DICM``, the
    file meta and the data set.

    pydicom's ``dcmwrite`` does the same after deep-copying the file meta, which costs more
    than the rest of the header together; the meta built by :func:`replace_file_meta` is ours
    to write as it is. Deflated data sets still go through ``dcmwrite``. With ``source``, the
    bytes the data set was read from, runs of elements no stage touched are views of it, not
    copies (:func:`_splice`); joined, the pieces are the bytes pydicom would write.
    """
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax == DeflatedExplicitVRLittleEndian:
        buffer = io.BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        return [buffer.getvalue()]
    fp = _buffer(syntax.is_implicit_VR, syntax.is_little_endian)
    fp.write((ds.preamble or bytes(128)) + b"DICM" + file_meta_bytes(ds.file_meta))
    if "PixelData" in ds:
        ds["PixelData"].is_undefined_length = syntax.is_compressed
    same_encoding = ds.original_encoding == (syntax.is_implicit_VR, syntax.is_little_endian)
    if source is not None and same_encoding and syntax.is_little_endian:
        return _splice(fp, ds, source)
    write_dataset(fp, ds)
    return [fp.getvalue()]


def _buffer(implicit: bool, little_endian: bool) -> DicomBytesIO:
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = implicit, little_endian
    return fp


def _splice(fp: DicomBytesIO, ds: FileDataset, source: bytes) -> list[bytes | memoryview]:
    """Encode ``ds`` after what ``fp`` holds, as ``write_dataset`` would, but take each run of
    untouched raw elements as one view of ``source``; only changed elements are encoded."""
    encoding = ds.get("SpecificCharacterSet", "iso8859")
    view = memoryview(source)
    pieces: list[bytes | memoryview] = []
    run_start = run_end = -1
    for tag in sorted(ds.keys()):
        if tag.element == 0 and tag.group > 6:
            continue  # retired group lengths are not written
        element = ds.get_item(tag, keep_deferred=True)
        span = _raw_span(element, tag, fp.is_implicit_VR, source)
        if span is not None and span[0] == run_end:
            run_end = span[1]
            continue
        if run_end >= 0:
            pieces.append(view[run_start:run_end])
            run_start = run_end = -1
        if span is not None:
            pieces.append(fp.getvalue())
            fp = _buffer(fp.is_implicit_VR, fp.is_little_endian)
            run_start, run_end = span
        else:
            element = ds.get_item(tag)  # a deferred value is read now
            encoded = _ascii_element(element, fp.is_implicit_VR)
            if encoded is None:
                write_data_element(fp, element, encoding)
            else:
                fp.write(encoded)
    if run_end >= 0:
        pieces.append(view[run_start:run_end])
    pieces.append(fp.getvalue())
    return [piece for piece in pieces if len(piece)]


#: VRs whose values are ASCII whatever the character set (PS3.5 6.2), all with 8-byte headers.
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI"})


def _ascii_element(element: object, implicit: bool) -> bytes | None:
    """A changed element of an ASCII-only VR, encoded as pydicom's ``write_data_element`` would
    encode it (backslash-joined, padded to even length); ``None`` for any other element."""
    if type(element) is not DataElement or element.VR not in _ASCII_VRS:
        return None
    value = element.value
    values = [] if value is None or value == "" else [value] if isinstance(value, str) else value
    if not isinstance(values, (list, MultiValue)) or not all(isinstance(v, str) for v in values):
        return None
    text = "\\".join(values)
    if not text.isascii() or len(text) > 0xFFFE:
        return None
    return _pack(element.tag, element.VR, text.encode("ascii"), implicit)


def _raw_span(element: object, tag: int, implicit: bool, source: bytes) -> tuple[int, int] | None:
    """Where a raw, defined-length element lies in ``source`` (header included), or ``None``."""
    if not isinstance(element, RawDataElement) or element.value_tell is None:
        return None
    if element.length == 0xFFFFFFFF or (element.length == 0 and element.VR == "UN"):
        return None  # pydicom writes an empty UN value with the dictionary's VR
    if stored_length(element, len(source)) < element.length:  # a short value, too
        return None
    if implicit:
        header = 8
    elif element.VR is None:
        return None
    else:
        header = 12 if element.VR in _LONG_HEADER_VRS else 8
    start = element.value_tell - header
    if start < 0 or source[start : start + 4] != struct.pack("<HH", tag >> 16, tag & 0xFFFF):
        return None
    return start, element.value_tell + element.length


def write_atomic(ds: FileDataset, output_root: Path, relpath: Path, source: bytes | None = None) -> str:
    """Write ``ds`` to ``output_root / relpath`` atomically (:func:`deid.staging.write_staged`).

    ``source``, the bytes ``ds`` was read from, lets untouched elements be copied as they are.

    Returns
    -------
    str
        The SHA-256 of the bytes written.
    """
    if _read_in_another_encoding(ds):
        for _ in ds.iterall():  # decode what is still raw, so it is encoded anew
            pass
        source = None
    pieces = _encode(ds, source)
    write_staged(output_root, relpath, pieces)
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
    return digest.hexdigest()
