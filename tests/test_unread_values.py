"""Values nobody reads: private elements stored as UN, public elements outside the dictionary,
bits of Pixel Data above High Bit, and Patient's Age over 89. Each at every depth and in each
byte order where it applies; the profile in force is in each test's parameters."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.datadict import DicomDictionary, mask_match
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_sequence
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from conftest import KEY, make_ct
from deid.header.engine import HeaderEngine
from deid.header.profiles import load_profile
from deid.header.stage import HeaderStage
from deid.pixels.codecs import stored_frames
from deid.pixels.unused_bits import decoded_unused_bits, normalised, unused_bits_set
from deid.pseudonyms import Pseudonymizer
from deid.stage import Instance, Quarantined

SYNTAXES = {
    "implicit-LE": ImplicitVRLittleEndian,
    "explicit-LE": ExplicitVRLittleEndian,
    "explicit-BE": ExplicitVRBigEndian,
}
#: The fake patient of make_ct, as it would be written into free text.
PHI_TEXT = "seen by DOE JOHN MRN445566"
PHI_WORDS = (b"DOE", b"JOHN", b"MRN445566")


def encoded(ds: Dataset, syntax: str) -> bytes:
    """``ds`` written in ``syntax``; native pixel data (given in little endian) is byte-swapped
    for big endian, which pydicom leaves to the caller."""
    ds.file_meta.TransferSyntaxUID = SYNTAXES[syntax]
    if syntax == "explicit-BE" and "PixelData" in ds and ds.BitsAllocated > 8:
        ds.PixelData = np.frombuffer(ds.PixelData, f"<u{ds.BitsAllocated // 8}").byteswap().tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def deidentified(data: bytes, profile: str, options: tuple[str, ...] = ()) -> bytes:
    """The file ``data`` read as ``deid run`` reads it, through the header stage, written out."""
    ds = dcmread(io.BytesIO(data))
    HeaderStage(HeaderEngine(load_profile(profile, options), Pseudonymizer(KEY)))(Instance(ds))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def sequence_bytes(*items: Dataset) -> bytes:
    """A sequence's value encoded as PS3.5 6.2.2 says UN holds it: Implicit VR Little Endian."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_sequence(fp, DataElement(0x00081115, "SQ", Sequence(list(items))), ["iso8859"])
    return fp.getvalue()


def private_block(ds: Dataset, group: int, creator: str, offset: int, value: object, vr: str) -> None:
    ds.add_new((group << 16) | 0x0010, "LO", creator)
    ds.add_new((group << 16) | 0x1000 | offset, vr, value)


def nest(inner: Dataset, depth: int) -> Dataset:
    """``inner`` as it is (depth 0) or inside ``depth`` levels of public sequence items."""
    for _ in range(depth):
        outer = Dataset()
        outer.ReferencedSeriesSequence = Sequence([inner])
        inner = outer
    return inner


def with_nested(ds: Dataset, content: Dataset, depth: int) -> Dataset:
    nested = nest(content, depth)
    for element in nested:
        ds.add(element)
    return ds


# -- private elements stored as UN -------------------------------------------------------------


def _private_text(creator: str, group: int, offset: int) -> Dataset:
    content = Dataset()
    private_block(content, group, creator, offset, PHI_TEXT.encode(), "UN")
    return content


#: (profile, options, site rules) under which a private block is kept and cleaned.
KEEPING = {
    # research: TCIA's knowledge base says CTP (0013,xx14) is LO and cleaned
    "research/tcia": ("research", (), "CTP", 0x0013, 0x14),
    # a site rule keeps the creator's block; the VR is unknown anywhere: the bytes read as text
    "site-rule": ("SITE", (), "ACME PRIVATE", 0x0031, 0x10),
}


def site_profile(tmp_path: Path) -> str:
    path = tmp_path / "site.toml"
    path.write_text(
        '[profile]\nname = "site"\nextends = "basic"\n\n'
        '[[rule]]\nprivate_creator = "ACME PRIVATE"\naction = "C"\n'
    )
    return str(path)


@pytest.mark.parametrize("syntax", SYNTAXES)
@pytest.mark.parametrize("depth", [0, 1, 2])
@pytest.mark.parametrize("keeping", KEEPING)
def test_private_text_stored_as_un_is_cleaned(tmp_path: Path, syntax: str, depth: int, keeping: str):
    profile, options, creator, group, offset = KEEPING[keeping]
    profile = site_profile(tmp_path) if profile == "SITE" else profile
    ds = with_nested(make_ct(), _private_text(creator, group, offset), depth)
    out = deidentified(encoded(ds, syntax), profile, options)
    assert b"seen by" in out  # kept ...
    assert not any(word in out for word in PHI_WORDS)  # ... and cleaned


@pytest.mark.parametrize("syntax", SYNTAXES)
@pytest.mark.parametrize("depth", [0, 1])
def test_private_un_sequence_is_parsed_and_its_items_cleaned(tmp_path: Path, syntax: str, depth: int):
    """Under a site rule keeping ACME PRIVATE: a UN sequence whose items hold a person name, a
    private text and another UN sequence two levels down."""
    innermost = Dataset()
    innermost.PersonName = "DOE^JOHN"
    private_block(innermost, 0x0031, "ACME PRIVATE", 0x11, PHI_TEXT.encode(), "UN")
    middle = Dataset()
    middle.PatientID = "MRN445566"
    private_block(middle, 0x0031, "ACME PRIVATE", 0x12, sequence_bytes(innermost), "UN")
    content = Dataset()
    private_block(content, 0x0031, "ACME PRIVATE", 0x10, sequence_bytes(middle), "UN")
    ds = with_nested(make_ct(), content, depth)
    out = deidentified(encoded(ds, syntax), site_profile(tmp_path))
    assert b"seen by" in out
    assert not any(word in out for word in PHI_WORDS)
    written = dcmread(io.BytesIO(out))
    item = nest(written, 0)
    for _ in range(depth):
        item = item.ReferencedSeriesSequence[0]
    if syntax != "implicit-LE":
        assert item[0x00311010].VR == "SQ"  # written as the sequence it is


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_private_block_the_object_declares_safe_is_read_with_its_declared_vr(syntax: str):
    """basic + retain_safe_private: the object's Private Data Element Characteristics Sequence
    declares block ACME DECLARED safe and its element 10 an LT."""
    ds = make_ct()
    definition = Dataset()
    definition.PrivateDataElement = 0x10
    definition.PrivateDataElementValueRepresentation = "LT"
    definition.PrivateDataElementValueMultiplicity = 1
    definition.PrivateDataElementNumberOfItems = [1, 1]
    definition.PrivateDataElementName = "Comment"
    definition.PrivateDataElementKeyword = "Comment"
    block = Dataset()
    block.PrivateGroupReference = 0x0033
    block.PrivateCreatorReference = "ACME DECLARED"
    block.BlockIdentifyingInformationStatus = "SAFE"
    block.PrivateDataElementDefinitionSequence = Sequence([definition])
    ds.PrivateDataElementCharacteristicsSequence = Sequence([block])
    private_block(ds, 0x0033, "ACME DECLARED", 0x10, PHI_TEXT.encode(), "UN")
    out = deidentified(encoded(ds, syntax), "basic", ("retain_safe_private",))
    assert b"seen by" in out and not any(word in out for word in PHI_WORDS)
    if syntax != "implicit-LE":
        assert dcmread(io.BytesIO(out))[0x00331010].VR == "LT"


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_private_un_is_still_removed_by_basic(syntax: str):
    ds = with_nested(make_ct(), _private_text("CTP", 0x0013, 0x14), 1)
    out = deidentified(encoded(ds, syntax), "basic")
    assert b"seen by" not in out


# -- public elements outside the dictionary -------------------------------------------------


def _unknown_public_tags() -> list[int]:
    """Tags one bit away from Patient ID (0010,0020) that the dictionary does not know."""
    flips = [0x00100020 ^ (1 << bit) for bit in range(32)]
    return [
        tag
        for tag in flips
        if tag >> 16 >= 8 and not (tag >> 16) & 1 and tag & 0xFFFF
        and tag not in DicomDictionary and mask_match(tag) is None
    ]


@pytest.mark.parametrize("syntax", SYNTAXES)
@pytest.mark.parametrize("depth", [0, 1, 2])
@pytest.mark.parametrize("profile", ["basic", "research"])
def test_public_tags_outside_the_dictionary_are_removed(syntax: str, depth: int, profile: str):
    tags = _unknown_public_tags()
    assert len(tags) >= 3
    content = Dataset()
    for tag in tags:
        content.add_new(tag, "LO" if syntax != "implicit-LE" else "UN", b"MRN445566")
    out = deidentified(encoded(with_nested(make_ct(), content, depth), syntax), profile)
    assert b"MRN445566" not in out


def test_a_site_rule_keeps_an_unknown_public_tag(tmp_path: Path):
    tag = _unknown_public_tags()[0]
    path = tmp_path / "site.toml"
    path.write_text(
        '[profile]\nname = "site"\nextends = "basic"\n\n'
        f'[[rule]]\ntag = "({tag >> 16:04X},{tag & 0xFFFF:04X})"\naction = "K"\n'
    )
    ds = make_ct()
    ds.add_new(tag, "LO", "KEEP ME")
    out = deidentified(encoded(ds, "explicit-LE"), str(path))
    assert b"KEEP ME" in out


# -- pixel bits above High Bit (old-style overlays) -----------------------------------------


def with_overlay_bits(
    signed: bool, allocated: int = 16, stored: int = 12, side: int = 32
) -> tuple[Dataset, np.ndarray]:
    """A CT whose samples hold an old-style overlay (a bitmap at Overlay Bits Position 12)."""
    rng = np.random.default_rng(3)
    low, high = (-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (0, (1 << stored) - 1)
    values = rng.integers(low, high, (side, side)).astype(np.int64)
    stored_values = values & ((1 << allocated) - 1)  # signed samples sign-extended, as writers store them
    overlay = np.zeros((side, side), np.int64)
    overlay[4:12, 4:28] = 1  # the overlay's text, in bit 12
    raw = (stored_values & ~(1 << stored)) | (overlay << stored)
    ds = make_ct()
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, stored, stored - 1
    ds.PixelRepresentation = int(signed)
    for element, vr, value in [(0x0010, "US", side), (0x0011, "US", side), (0x0040, "CS", "G"), (0x0050, "SS", [1, 1]),
                               (0x0100, "US", 16), (0x0102, "US", stored)]:
        ds.add_new(0x60000000 | element, vr, value)  # Overlay Rows ... Overlay Bit Position
    ds.PixelData = raw.astype(f"<u{allocated // 8}").tobytes()  # little endian: see encoded()
    return ds, values


@pytest.mark.parametrize("syntax", ["explicit-LE", "explicit-BE", "implicit-LE"])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("profile", ["basic", "research"])
def test_overlay_bits_in_pixel_data_are_cleared(syntax: str, signed: bool, profile: str):
    ds, values = with_overlay_bits(signed)
    data = encoded(ds, syntax)
    assert unused_bits_set(dcmread(io.BytesIO(data))) > 0
    out = dcmread(io.BytesIO(deidentified(data, profile)))
    assert 0x60000102 not in out
    assert unused_bits_set(out) == 0
    assert np.array_equal(out.pixel_array.astype(np.int64), values)  # the image itself unchanged


def compressed(ds: Dataset, syntax: str, planted: bool) -> Dataset:
    """``ds`` (from :func:`with_overlay_bits`) compressed losslessly by pydicom's encoders, every
    16 bits of each sample kept (the overlay bit in ``planted``, else cleared first); its Bits
    Stored stays 12."""
    samples = np.frombuffer(ds.PixelData, "<u2").reshape(ds.Rows, ds.Columns)
    if not planted:
        samples = normalised(samples, 16, 12, 0, bool(ds.PixelRepresentation))
    ds.BitsStored, ds.HighBit = 16, 15  # the encoders refuse samples wider than Bits Stored
    ds.compress(COMPRESSED[syntax], samples.view("<i2") if ds.PixelRepresentation else samples,
                generate_instance_uid=False)
    ds.BitsStored, ds.HighBit = 12, 11
    return ds


COMPRESSED = {"RLE": RLELossless, "JPEG-LS": JPEGLSLossless, "JPEG2000": JPEG2000Lossless}



def saved(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("syntax", sorted(COMPRESSED))
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("profile", ["basic", "research"])
def test_overlay_bits_in_compressed_pixel_data_are_cleared(syntax: str, signed: bool, profile: str):
    ds, values = with_overlay_bits(signed)
    data = saved(compressed(ds, syntax, planted=True))
    before = dcmread(io.BytesIO(data))
    assert sum(decoded_unused_bits(frame, before) for frame in stored_frames(before, "test")) > 0
    out = dcmread(io.BytesIO(deidentified(data, profile)))
    assert 0x60000102 not in out
    assert out.file_meta.TransferSyntaxUID == COMPRESSED[syntax]  # written back losslessly in its own syntax
    assert sum(decoded_unused_bits(frame, out) for frame in stored_frames(out, "test")) == 0
    assert np.array_equal(out.pixel_array.astype(np.int64), values)  # the image itself unchanged


def test_compressed_pixel_data_without_a_declared_overlay_is_not_decoded():
    ds, _ = with_overlay_bits(False)
    for element in [e for e in ds if e.tag.group == 0x6000]:
        del ds[element.tag]
    data = saved(compressed(ds, "RLE", planted=True))
    assert dcmread(io.BytesIO(deidentified(data, "basic"))).PixelData == dcmread(io.BytesIO(data)).PixelData


def test_compressed_pixel_data_with_a_declared_overlay_that_cannot_be_decoded_is_quarantined():
    ds = compressed(with_overlay_bits(False)[0], "JPEG-LS", planted=True)
    ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG-LS stream"])
    with pytest.raises(Quarantined, match="JPEG-LS Lossless"):
        deidentified(saved(ds), "basic")


def test_pixel_data_without_unused_bits_is_kept_byte_for_byte():
    ds, _ = with_overlay_bits(False)
    ds.PixelData = (np.frombuffer(ds.PixelData, "<u2") & 0x0FFF).astype("<u2").tobytes()
    data = encoded(ds, "explicit-LE")
    before = dcmread(io.BytesIO(data)).PixelData
    assert dcmread(io.BytesIO(deidentified(data, "basic"))).PixelData == before


# -- Patient's Age over 89 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "expected"),
    [("093Y", "090Y"), ("090Y", "090Y"), ("089Y", "089Y"), ("120Y", "090Y"), ("070Y", "070Y"),
     ("999W", "999W"), ("006M", "006M"), ("093", "090Y")],
)
@pytest.mark.parametrize("depth", [0, 1])
def test_research_caps_ages_over_89(age: str, expected: str, depth: int):
    """research keeps Patient's Age (Retain Patient Characteristics) and caps it (Safe Harbor)."""
    content = Dataset()
    content.PatientAge = age
    ds = with_nested(make_ct(), content, depth)
    if depth:
        del ds.PatientAge
    out = dcmread(io.BytesIO(deidentified(encoded(ds, "explicit-LE"), "research")))
    item = out if not depth else out.ReferencedSeriesSequence[0]
    assert item.PatientAge == expected


def test_a_site_turns_the_age_cap_off(tmp_path: Path):
    path = tmp_path / "site.toml"
    path.write_text('[profile]\nname = "site"\nextends = "research"\nhipaa_age_cap = false\n')
    ds = make_ct()
    ds.PatientAge = "093Y"
    assert dcmread(io.BytesIO(deidentified(encoded(ds, "explicit-LE"), str(path)))).PatientAge == "093Y"


def test_basic_still_removes_the_age():
    ds = make_ct()
    ds.PatientAge = "093Y"
    assert "PatientAge" not in dcmread(io.BytesIO(deidentified(encoded(ds, "explicit-LE"), "basic")))


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_private_text_of_unknown_vr_loses_other_peoples_names_and_numbers(tmp_path: Path, syntax: str):
    """Site rule keeping ACME PRIVATE: free-text cleaning, not only the object's own values."""
    content = Dataset()
    private_block(content, 0x0031, "ACME PRIVATE", 0x10, b"reviewed by Dr. Alice Walker, phone +1 617 555 0143", "UN")
    out = deidentified(encoded(with_nested(make_ct(), content, 1), syntax), site_profile(tmp_path))
    assert b"reviewed by" in out
    assert b"Walker" not in out and b"555 0143" not in out
