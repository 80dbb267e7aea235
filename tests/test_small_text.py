"""Small burned-in text on a large radiograph: the first read (a 1 024-pixel copy) misses it, the
second read of full-resolution windows finds it. Profile basic, pixel stages text only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.uid import ComputedRadiographyImageStorage

from conftest import KEY, make_ct, write
from deid.pipeline import RunConfig
from deid.pixels.ocr import read_text
from deid.pixels.render import to_display
from deid.pixels.small_text import read_small_text
from deid.process import process_file

pytest.importorskip("onnxruntime", reason="the text stage needs ONNX Runtime (the cpu extra)")
pytestmark = pytest.mark.ocr

#: Lines 10-12 pixels high (glyphs of 8 and 9 pixels), where radiograph exports print them.
SMALL_LINES = [
    ("ID 12345678 03/02/2017", (1500, 60), 8),
    ("SMITH JANE DOB 1931-02-14", (60, 1980), 9),
    ("ACC 99887766", (1600, 1960), 8),
    ("ST MARY HOSPITAL", (900, 30), 9),
]


def radiograph(level: int, photometric: str = "MONOCHROME2"):
    """A 2048x2048 12-bit CR: smooth anatomy, noise, and the small lines drawn at ``level``."""
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:2048, 0:2048]
    pixels = np.exp(-(((x - 1024) / 700) ** 2 + ((y - 1024) / 800) ** 2)) * 3000 + rng.normal(400, 60, x.shape)
    text = Image.new("L", (2048, 2048), 0)
    pen = ImageDraw.Draw(text)
    for line, position, size in SMALL_LINES:
        pen.text(position, line, fill=255, font=ImageFont.load_default(size=size))
    drawn = np.asarray(text) > 0
    pixels[drawn] = level
    ds = make_ct()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    ds.Modality = "CR"
    for keyword in ("RescaleIntercept", "RescaleSlope", "ImagePositionPatient", "ImageOrientationPatient",
                    "PixelSpacing", "SliceThickness", "FrameOfReferenceUID", "BurnedInAnnotation"):
        delattr(ds, keyword)
    stored = np.clip(pixels, 0, 4095).astype(np.uint16)
    if photometric == "MONOCHROME1":
        stored = 4095 - stored
    ds.set_pixel_data(stored, photometric_interpretation=photometric, bits_stored=12)
    return ds, drawn


def uncovered(drawn: np.ndarray, boxes) -> int:
    covered = np.zeros_like(drawn)
    for x, y, width, height in boxes:
        covered[y : y + height, x : x + width] = True
    return int((drawn & ~covered).sum())


@pytest.mark.parametrize(
    ("level", "photometric"), [(4095, "MONOCHROME2"), (2600, "MONOCHROME2"), (4095, "MONOCHROME1")]
)
def test_small_text_missed_by_the_first_read_is_found_by_the_second(level: int, photometric: str):
    ds, drawn = radiograph(level, photometric)
    picture = to_display(ds.pixel_array, ds)
    first = read_text(picture)
    assert uncovered(drawn, [line.box for line in first]) > 0  # what the first read alone leaves
    second = read_small_text(picture, first)
    assert uncovered(drawn, [line.box for line in first + second]) == 0


@pytest.mark.parametrize("mode", ["all", "sensitive"])
def test_the_text_stage_masks_small_text_of_a_2048_radiograph(tmp_path: Path, mode: str):
    ds, drawn = radiograph(4095)
    write(ds, tmp_path / "in" / "cr.dcm")
    config = RunConfig("basic", (), KEY, pixels="none", text_mode=mode)
    result = process_file(config, tmp_path / "in", tmp_path / "out", "cr.dcm")
    assert result.status == "written", result.reason
    out = dcmread(tmp_path / "out" / result.dst).pixel_array
    assert (out[drawn] == 0).all()


def test_pictures_the_first_read_sees_whole_get_no_second_read():
    small = np.zeros((1024, 1024, 3), np.uint8)
    assert read_small_text(small, []) == []
