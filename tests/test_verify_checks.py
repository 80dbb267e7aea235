"""`deid verify`'s checks of values nobody reads and of pixels: each finds what a careless tool
leaves (written by hand here), and finds nothing in what `deid run` writes (profile named)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian
from test_unread_values import COMPRESSED, compressed, encoded, private_block, sequence_bytes, with_overlay_bits

from conftest import KEY, make_ct, write
from deid.checks.values import hidden_values
from deid.pipeline import RunConfig, run
from deid.verify import verify

SYNTAXES = {"implicit-LE": ImplicitVRLittleEndian, "explicit-BE": ExplicitVRBigEndian}


def leaky_unread_values() -> Dataset:
    """A CT whose Patient ID hides in a private UN sequence two items deep, and whose name hides
    in a private element after the pixel data."""
    inner = Dataset()
    private_block(inner, 0x0031, "ACME PRIVATE", 0x11, b"MRN445566 ", "UN")
    outer = Dataset()
    private_block(outer, 0x0031, "ACME PRIVATE", 0x12, sequence_bytes(inner), "UN")
    ds = make_ct()
    for keyword in ("PatientName", "PatientID", "ReferringPhysicianName", "OtherPatientIDs"):
        if keyword in ds:
            setattr(ds, keyword, "ANON")
    private_block(ds, 0x0031, "ACME PRIVATE", 0x10, sequence_bytes(outer), "UN")
    private_block(ds, 0x7FE1, "ACME AFTER PIXELS", 0x10, b"DOE^JOHN", "UN")
    return ds


@pytest.mark.parametrize("syntax", ["implicit-LE", "explicit-LE", "explicit-BE"])
def test_values_in_un_sequences_and_after_the_pixel_data_are_found(tmp_path: Path, syntax: str):
    write(make_ct(), tmp_path / "in" / "a.dcm")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.dcm").write_bytes(encoded(leaky_unread_values(), syntax))
    report = verify(tmp_path / "out", tmp_path / "in", checks=["hidden-values"])
    places = {(g.value, how) for g in report.leaks for _, how in g.places}
    assert ("MRN445566", "unread value (0031,1010)[0].(0031,1012)[0].(0031,1011)") in places
    assert ("DOE", "unread value (7FE1,1010)") in places or ("JOHN", "unread value (7FE1,1010)") in places


def test_hidden_values_names_the_element_never_the_value():
    ds = leaky_unread_values()
    wheres = [where for where, _ in hidden_values(ds)]
    assert "(0031,1010)[0].(0031,1012)[0].(0031,1011)" in wheres
    assert not any("MRN" in where or "DOE" in where for where in wheres)


@pytest.mark.parametrize("syntax", ["explicit-LE", "explicit-BE"])
def test_bits_above_high_bit_are_found(tmp_path: Path, syntax: str):
    write(make_ct(), tmp_path / "in" / "a.dcm")
    ds, _ = with_overlay_bits(False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.dcm").write_bytes(encoded(ds, syntax))
    report = verify(tmp_path / "out", tmp_path / "in", checks=["pixel-bits"])
    assert [(g.kind, g.places) for g in report.leaks] == [("pixels", [("b.dcm", "pixels")])]


@pytest.mark.parametrize("syntax", sorted(COMPRESSED))
@pytest.mark.parametrize("signed", [False, True])
def test_bits_above_high_bit_in_compressed_pixel_data_are_found(tmp_path: Path, syntax: str, signed: bool):
    write(make_ct(), tmp_path / "in" / "a.dcm")
    write(compressed(with_overlay_bits(signed)[0], syntax, planted=True), tmp_path / "out" / "b.dcm")
    write(compressed(with_overlay_bits(signed)[0], syntax, planted=False), tmp_path / "out" / "c.dcm")
    report = verify(tmp_path / "out", tmp_path / "in", checks=["pixel-bits"])
    assert [(g.kind, g.places) for g in report.leaks] == [("pixels", [("b.dcm", "pixels")])]
    assert report.checked["release images checked for bits above High Bit"] == 2
    assert not [note for note in report.notes if "not checked" in note]


def test_compressed_pixel_data_that_cannot_be_decoded_is_reported_not_checked(tmp_path: Path):
    write(make_ct(), tmp_path / "in" / "a.dcm")
    ds = compressed(with_overlay_bits(False)[0], "JPEG-LS", planted=True)
    ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG-LS stream"])
    write(ds, tmp_path / "out" / "b.dcm")
    report = verify(tmp_path / "out", tmp_path / "in", checks=["pixel-bits"])
    assert report.leaks == []
    assert report.checked["release images not checked for bits above High Bit (cannot be decoded)"] == 1
    assert "release images checked for bits above High Bit" not in report.checked or (
        report.checked["release images checked for bits above High Bit"] == 0
    )
    assert [note for note in report.notes if "not checked" in note and "JPEG-LS Lossless" in note]


@pytest.mark.parametrize("profile", ["research", "basic"])
def test_deid_run_output_passes_the_unread_value_and_bit_checks(tmp_path: Path, profile: str):
    """The same inputs through ``deid run --profile PROFILE --header-only``: nothing found.
    research keeps ACME PRIVATE (a site rule) so its values are cleaned, not dropped."""
    site = tmp_path / "site.toml"
    site.write_text(
        f'[profile]\nname = "site"\nextends = "{profile}"\n\n[[rule]]\nprivate_creator = "ACME PRIVATE"\naction = "C"\n'
    )
    ds = leaky_unread_values()
    ds.PatientName, ds.PatientID = "DOE^JOHN", "MRN445566"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.dcm").write_bytes(encoded(ds, "implicit-LE"))
    for name, signed, syntax in (("b", False, "explicit-BE"), ("c", True, "explicit-LE")):
        overlay, _ = with_overlay_bits(signed, side=256)  # pixel data larger than what run reads at once
        uid = f"1.2.826.0.1.3680043.8.498.9{ord(name)}"
        overlay.SOPInstanceUID = overlay.file_meta.MediaStorageSOPInstanceUID = uid
        (tmp_path / "in" / f"{name}.dcm").write_bytes(encoded(overlay, syntax))
    overlay = compressed(with_overlay_bits(True)[0], "JPEG-LS", planted=True)
    overlay.SOPInstanceUID = overlay.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.9100"
    write(overlay, tmp_path / "in" / "d.dcm")
    summary = run(RunConfig(str(site), (), KEY, header_only=True), tmp_path / "in", tmp_path / "out", jobs=1)
    assert summary.counts["written"] == 4
    report = verify(tmp_path / "out", tmp_path / "in", checks=["hidden-values", "pixel-bits", "header-values"])
    assert report.leaks == [], [(g.kind, g.places) for g in report.leaks]
    assert report.checked["release images checked for bits above High Bit"] == 4


def _text_image() -> Dataset:
    ds = make_ct()
    image = Image.new("L", (512, 512), 20)
    ImageDraw.Draw(image).text((20, 20), "DOE JOHN MRN445566", fill=255, font=ImageFont.load_default(size=28))
    ds.Rows = ds.Columns = 512
    ds.set_pixel_data(np.asarray(image), photometric_interpretation="MONOCHROME2", bits_stored=8)
    ds.BurnedInAnnotation = "YES"
    return ds


@pytest.mark.ocr
def test_ocr_finds_text_still_in_the_pixels_only_when_asked(tmp_path: Path):
    pytest.importorskip("onnxruntime", reason="OCR needs ONNX Runtime (the cpu extra)")
    write(make_ct(), tmp_path / "in" / "a.dcm")
    write(_text_image(), tmp_path / "out" / "b.dcm")
    assert "pixel-text" not in {name for name, _ in verify(tmp_path / "out", tmp_path / "in").checks}
    report = verify(tmp_path / "out", tmp_path / "in", ocr=True)
    found = [g for g in report.leaks if g.kind == "text"]
    assert found and found[0].places == [("b.dcm", "pixels")]


@pytest.mark.ocr
def test_ocr_finds_nothing_in_what_the_text_stage_cleaned(tmp_path: Path):
    pytest.importorskip("onnxruntime", reason="OCR needs ONNX Runtime (the cpu extra)")
    write(_text_image(), tmp_path / "in" / "a.dcm")
    run(RunConfig("basic", (), KEY, pixels="none"), tmp_path / "in", tmp_path / "out", jobs=1)
    report = verify(tmp_path / "out", tmp_path / "in", ocr=True)
    assert report.leaks == [], [(g.kind, g.value, g.places) for g in report.leaks]
    assert report.checked["release pictures read by OCR"] == 1


def textured_body(side: int = 256, seed: int = 1) -> np.ndarray:
    """A small picture of noisy anatomy (speckle within an ellipse) that the detector, which
    enlarges small pictures, takes whole for one line of text."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side]
    body = ((x - side / 2) / (side * 0.4)) ** 2 + ((y - side / 2) / (side * 0.3)) ** 2 < 1
    return np.where(body, rng.integers(40, 220, (side, side)), rng.integers(0, 20, (side, side))).astype(np.uint8)


@pytest.mark.ocr
def test_ocr_counts_a_textured_area_over_a_small_picture_apart_from_text(tmp_path: Path):
    pytest.importorskip("onnxruntime", reason="OCR needs ONNX Runtime (the cpu extra)")
    write(make_ct(), tmp_path / "in" / "a.dcm")
    ds = _text_image()
    ds.Rows = ds.Columns = 256
    ds.set_pixel_data(textured_body(), photometric_interpretation="MONOCHROME2", bits_stored=8)
    write(ds, tmp_path / "out" / "b.dcm")
    report = verify(tmp_path / "out", tmp_path / "in", checks=["pixel-text"])
    assert report.leaks == []
    assert report.checked["OCR 'lines' over most of a picture (a textured area) not counted as text"] == 1


@pytest.mark.ocr
@pytest.mark.corpus
def test_ocr_reads_no_line_over_the_whole_of_a_small_noisy_image(tmp_path: Path, shared: Path):
    """A 256x256 MR of the corpus (midib) whose speckle the detector, enlarging it, took whole for
    a line ("Q9" over x=0 y=0 w=256 h=256)."""
    pytest.importorskip("onnxruntime", reason="OCR needs ONNX Runtime (the cpu extra)")
    source = shared / "corpus" / "midib" / "original" / "1-25.dcm"
    write(make_ct(), tmp_path / "in" / "a.dcm")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.dcm").write_bytes(source.read_bytes())
    report = verify(tmp_path / "out", tmp_path / "in", checks=["pixel-text"])
    assert report.leaks == [], [(g.value, g.sources) for g in report.leaks]
    assert report.checked["release pictures read by OCR"] == 1


def test_verify_prints_no_warning_that_quotes_a_value(tmp_path: Path):
    """pydicom warns about invalid values by quoting them; verify must not pass them on."""
    ds = make_ct()
    ds.ReferencedSOPInstanceUID = "DOE.JOHN.MRN445566"  # an invalid UI holding PHI
    write(ds, tmp_path / "in" / "a.dcm")
    write(make_ct(), tmp_path / "out" / "b.dcm")
    result = subprocess.run(
        [sys.executable, "-m", "deid.cli", "verify", str(tmp_path / "out"), "--against", str(tmp_path / "in")],
        capture_output=True, text=True,
    )
    assert result.returncode == 1  # the copy leaks, and says so without values
    assert "DOE.JOHN" not in result.stdout + result.stderr and "MRN445566" not in result.stdout + result.stderr
