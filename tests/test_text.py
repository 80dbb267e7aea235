"""The burned-in text stage on generated images and on the shared corpus."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    UltrasoundMultiFrameImageStorage,
)
from test_verify_checks import textured_body

from conftest import KEY, iod_errors, make_ct, write
from deid.pipeline import DUPLICATE_REASON, RunConfig
from deid.pixels.ocr import read_text
from deid.pixels.render import frames_of, to_display
from deid.pixels.text import line_is_safe
from deid.process import process_file
from deid.pseudonyms import Pseudonymizer

pytest.importorskip("onnxruntime", reason="the text stage needs ONNX Runtime (the cpu extra)")
pytestmark = pytest.mark.ocr
CONFIG = RunConfig("basic", (), KEY, pixels="none")  # the text stage alone; test_deform runs the stage after it


def draw(shape: tuple[int, ...], texts: list[tuple[str, tuple[int, int], int, object]], background) -> np.ndarray:
    """An image (RGB if ``shape`` has 3 axes) with ``texts`` as (text, (x, y), size, colour)."""
    mode = "RGB" if len(shape) == 3 else "L"
    image = Image.new(mode, (shape[1], shape[0]), background)
    pen = ImageDraw.Draw(image)
    for text, position, size, colour in texts:
        pen.text(position, text, fill=colour, font=ImageFont.load_default(size=size))
    return np.asarray(image)


def ultrasound(pixels: np.ndarray) -> Dataset:
    ds = make_ct()
    ds.Modality = "US"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    for keyword in ("RescaleIntercept", "RescaleSlope", "ImagePositionPatient", "ImageOrientationPatient",
                    "PixelSpacing", "SliceThickness", "FrameOfReferenceUID", "BurnedInAnnotation"):
        delattr(ds, keyword)
    rgb = pixels.shape[-1] == 3
    ds.set_pixel_data(pixels, photometric_interpretation="RGB" if rgb else "MONOCHROME2", bits_stored=8)
    return ds


def ocr_text(ds: Dataset) -> str:
    frames = frames_of(ds.pixel_array, ds)
    return " ".join(line.text for frame in frames[:2] for line in read_text(to_display(frame, ds)))


def run_one(ds: Dataset, tmp_path: Path) -> Dataset:
    write(ds, tmp_path / "in" / "a.dcm")
    result = process_file(CONFIG, tmp_path / "in", tmp_path / "out", "a.dcm")
    assert result.status == "written", result.reason
    return dcmread(tmp_path / "out" / result.dst)


@pytest.mark.parametrize(
    ("shape", "background", "colour"),
    [((480, 640), 20, 255), ((480, 640), 90, 160), ((480, 640, 3), (10, 10, 40), (255, 255, 0))],
    ids=["white-on-black", "low-contrast", "yellow-on-rgb"],
)
def test_text_of_several_sizes_and_contrasts_is_gone(tmp_path: Path, shape, background, colour):
    pixels = draw(
        shape,
        [("DOE^JOHN", (5, 2), 28, colour), ("MRN445566 03/01/2024", (300, 440), 18, colour),
         ("SPRINGFIELD", (220, 200), 40, colour)],
        background,
    )
    out = run_one(ultrasound(pixels), tmp_path)
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in [c.CodeValue for c in out.DeidentificationMethodCodeSequence]
    remaining = ocr_text(out).upper()
    for word in ("DOE", "JOHN", "MRN", "445566", "2024", "SPRINGFIELD"):
        assert word not in remaining


def test_monochrome1_radiograph_keeps_safe_markers_and_loses_the_name(tmp_path: Path):
    pixels = 255 - draw((600, 600), [("DOE JOHN 01.09.2012", (20, 20), 30, 255), ("PORTABLE", (420, 540), 30, 255)], 30)
    ds = make_ct()
    ds.Modality = "CR"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    del ds.BurnedInAnnotation
    ds.set_pixel_data(pixels.astype(np.uint8), photometric_interpretation="MONOCHROME1", bits_stored=8)
    out = run_one(ds, tmp_path)
    text = ocr_text(out).upper()
    assert "DOE" not in text and "2012" not in text
    assert "PORTABLE" in text  # sensitive mode keeps the positioning word
    assert out.pixel_array[20:50, 20:300].max() == out.pixel_array.max()  # blanked to black (max in MONOCHROME1)


@pytest.mark.parametrize("syntax", [None, RLELossless, JPEGLSLossless], ids=["native", "rle", "jpeg-ls"])
def test_multiframe_text_near_the_edge_in_lossless_syntaxes(tmp_path: Path, syntax):
    frames = np.stack(
        [draw((240, 320), [("ID 445566", (0, 0), 22, 255), ("12:34:56", (230, 220), 16, 255)], 10 + 5 * i)
         for i in range(4)]
    )
    ds = ultrasound(frames)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    ds.BurnedInAnnotation = "YES"
    if syntax is not None:
        ds.compress(syntax, encoding_plugin="pydicom" if syntax == RLELossless else "pyjpegls")
    out = run_one(ds, tmp_path)
    assert out.file_meta.TransferSyntaxUID == (syntax or "1.2.840.10008.1.2.1")
    assert out.pixel_array.shape == frames.shape
    for frame in out.pixel_array:
        assert "445566" not in " ".join(line.text for line in read_text(to_display(frame, out)))
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed: the IOD check did not run")
    output = next((tmp_path / "out").rglob("*.dcm"))
    assert iod_errors(output) <= iod_errors(tmp_path / "in" / "a.dcm")


def test_a_lossy_image_cleaned_of_text_still_says_it_was_lossy(tmp_path: Path):
    ds = ultrasound(draw((240, 320), [("DOE^JOHN 445566", (10, 10), 24, 255)], 20))
    ds.compress(JPEGLSNearLossless, jls_error=3, encoding_plugin="pyjpegls")
    assert "LossyImageCompression" not in ds
    out = run_one(ds, tmp_path)
    assert out.file_meta.TransferSyntaxUID == JPEG2000Lossless  # never lossy again
    assert out.LossyImageCompression == "01"
    assert out.BurnedInAnnotation == "NO"
    assert [c.CodeValue for c in out.DeidentificationMethodCodeSequence] == ["113100", "113101"]


def test_image_without_text_is_untouched_byte_for_byte(tmp_path: Path):
    rng = np.random.default_rng(1)
    ds = ultrasound(rng.integers(0, 60, (256, 256), dtype=np.uint8))
    out = run_one(ds, tmp_path)
    assert out.PixelData == ds.PixelData
    assert "113101" not in [c.CodeValue for c in out.DeidentificationMethodCodeSequence]


def test_a_textured_area_the_detector_takes_for_a_line_is_masked(tmp_path: Path):
    """Fail closed: the detector, enlarging a small picture, takes its speckle for one line over the
    whole picture; the stage masks it rather than judge what it hides (verify does not count it as
    text: test_verify_checks)."""
    picture = textured_body()
    assert any(line.box[2] > 128 and line.box[3] > 128 for line in read_text(picture))
    ds = ultrasound(picture)
    ds.BurnedInAnnotation = "YES"
    assert (run_one(ds, tmp_path).pixel_array[100:160, 60:200] == 0).all()


@pytest.mark.parametrize(
    ("text", "safe"),
    [("L", True), ("PORTABLE ERECT", True), ("4.0cm 36Hz", True), ("Semi-Upright", True),
     ("DOB: 07.22.1943", False), ("KAUFMAN SCOTT", False), ("03/02/2017 05:24:57PM", False),
     ("00079241539", False)],
)
def test_sensitive_mode_line_rule(text, safe):
    assert line_is_safe(text, re.compile("NOBODY")) is safe


# -- the shared corpus ----------------------------------------------------------------------

def phi_files(shared: Path) -> list[str]:
    rows = csv.DictReader((shared / "corpus" / "manifest.csv").open())
    return [r["path"] for r in rows if r["burned_in_text"].startswith("yes-PHI")]


def first_frame_lines(ds: Dataset) -> list[str]:
    return [line.text for line in read_text(to_display(frames_of(ds.pixel_array, ds)[0], ds))]


def identifying_lines(lines: list[str]) -> list[str]:
    """Lines that are not safe and say something (a lone glyph like '▲' says nothing)."""
    return [line for line in lines if not line_is_safe(line, None) and len(re.findall(r"\w", line)) >= 2]


@pytest.mark.corpus
def test_corpus_phi_text_is_masked(corpus_runs, tmp_path: Path):
    run = corpus_runs("basic")  # CONFIG, over the whole corpus
    recall = {}
    for src in phi_files(run.inputs.parent):
        row = run.row(src)
        if row["reason"].startswith(DUPLICATE_REASON):  # the run kept another encoding of the object: this one alone
            result = process_file(CONFIG, run.inputs, tmp_path, src)
            row = {"status": result.status, "output": str(tmp_path / result.dst)}
        if row["status"] != "written":
            continue  # quarantined with a reason: nothing left the building
        before = identifying_lines(first_frame_lines(dcmread(run.inputs / src)))
        after = " ".join(first_frame_lines(dcmread(run.out / row["output"])))
        survived = [line for line in before if line in after]
        recall[src] = 1 - len(survived) / max(1, len(before))
    assert len(recall) >= 12
    assert recall == {src: 1.0 for src in recall}


@pytest.mark.corpus
def test_presidio_ground_truth_boxes_are_covered(corpus_runs):
    run = corpus_runs("basic")
    truth = json.loads((run.inputs / "presidio" / "dicom_pii_verify_integration.json").read_text())
    out = dcmread(run.out / run.row("presidio/0_ORIGINAL_compressed.dcm")["output"]).pixel_array
    fill = out.max()  # MONOCHROME1: black is the maximum
    for box in truth["ground_truth"]:
        x, y = box["left"] - 25, box["top"] - 25  # the JSON counts a 25-pixel padding
        region = out[y : y + box["height"], x : x + box["width"]]
        assert (region == fill).mean() > 0.95, box["label"]


@pytest.mark.corpus
def test_corpus_images_without_text_keep_their_pixels(corpus_runs):
    run = corpus_runs("basic")
    for src in ("pydicom-data/RG1_UNCR.dcm", "pydicom-data/RG1_J2KI.dcm"):  # CR: the stage runs
        row = run.row(src)
        assert row["status"] == "written"
        assert dcmread(run.out / row["output"]).PixelData == dcmread(run.inputs / src).PixelData


def test_cleaned_object_keeps_its_keyed_uid_and_is_deterministic(tmp_path: Path):
    pixels = draw((240, 320), [("DOE^JOHN 445566", (10, 10), 24, 255)], 20)
    ds = ultrasound(pixels)
    first = run_one(ds, tmp_path / "a")
    run_one(ds, tmp_path / "b")
    assert first.BurnedInAnnotation == "NO"
    assert first.SOPInstanceUID == Pseudonymizer(KEY).uid(ds.SOPInstanceUID)
    files = [next((tmp_path / run / "out").rglob("*.dcm")).read_bytes() for run in ("a", "b")]
    assert files[0] == files[1]


def test_background_fill_takes_the_corner_value(tmp_path: Path):
    pixels = draw((240, 320), [("DOE^JOHN 445566", (60, 100), 24, 255)], 37)
    write(ultrasound(pixels), tmp_path / "in" / "a.dcm")
    config = RunConfig("basic", (), KEY, text_fill="background", pixels="none")
    result = process_file(config, tmp_path / "in", tmp_path / "out", "a.dcm")
    out = dcmread(tmp_path / "out" / result.dst).pixel_array
    assert (out[100:124, 60:250] == 37).all()
