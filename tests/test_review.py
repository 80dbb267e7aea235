"""The review page: what the pixel stages did, shown in a real browser (headless Chromium)."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from test_text import draw, ultrasound

from conftest import KEY, REPO, make_ct, write
from deid.pipeline import RunConfig, run
from deid.review import write_page

pytest.importorskip("onnxruntime", reason="the text stage needs ONNX Runtime (the cpu extra)")
#: Where `DEID_README_SCREENSHOT=1 python -m pytest tests/test_review.py` puts the README's picture.
README_SCREENSHOT = REPO / "docs" / "review.png"


def make_inputs(root: Path) -> None:
    """An ultrasound with names burned in, one with declared regions, a radiograph with a kept
    marker, a plain ultrasound (nothing found), a CT (not examined) and a truncated file."""
    texts = [("DOE^JOHN", (5, 2), 28, 255), ("MRN445566 03/01/2024", (300, 440), 18, 255),
             ("SPRINGFIELD", (220, 200), 40, 255)]
    write(ultrasound(draw((480, 640), texts, 20)), root / "us-text.dcm")
    regions = ultrasound(draw((480, 640), [("DOE^JOHN", (20, 8), 24, 255), ("SMITH", (260, 220), 30, 255)], 20))
    regions.SOPInstanceUID = regions.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1010"
    region = Dataset()
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 100, 60
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = 540, 420
    regions.SequenceOfUltrasoundRegions = Sequence([region])
    write(regions, root / "us-regions.dcm")
    radiograph = make_ct(sop_uid="1.2.826.0.1.3680043.8.498.1020")
    radiograph.Modality = "CR"
    radiograph.SOPClassUID = radiograph.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    del radiograph.BurnedInAnnotation
    pixels = 255 - draw((600, 600), [("DOE JOHN 01.09.2012", (20, 20), 30, 255), ("PORTABLE", (420, 540), 30, 255)], 30)
    radiograph.set_pixel_data(pixels.astype(np.uint8), photometric_interpretation="MONOCHROME1", bits_stored=8)
    write(radiograph, root / "cr.dcm")
    plain = ultrasound(np.random.default_rng(1).integers(0, 60, (128, 128), dtype=np.uint8))
    plain.SOPInstanceUID = plain.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1030"
    write(plain, root / "us-plain.dcm")
    ct = write(make_ct(sop_uid="1.2.826.0.1.3680043.8.498.1040"), root / "ct.dcm").read_bytes()
    (root / "broken.dcm").write_bytes(ct[: len(ct) - 40])


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("review")
    make_inputs(root / "in")
    config = RunConfig("basic", (), KEY, text_fill="test", pixels="none")
    summary = run(config, root / "in", root / "out", jobs=1)
    assert summary.counts == {"written": 5, "quarantined": 1, "skipped": 0}
    return root / "out", root / "out.audit"


@pytest.mark.slow
def test_boxes_are_in_the_audit_and_the_page_stays_out_of_the_release(release):
    out, audit = release
    with (audit / "boxes.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    by_input = {row["input"]: row for row in rows}
    assert set(by_input) == {"us-text.dcm", "us-regions.dcm", "cr.dcm"}
    assert {row["layer"] for row in rows} == {"ocr", "ultrasound"}
    kept = [row for row in rows if row["masked"] == "0"]
    assert [row["input"] for row in kept] == ["cr.dcm"]  # PORTABLE, kept in sensitive mode
    assert (audit / "review" / "index.html").is_file()
    assert not any("review" in p.name or p.suffix in (".html", ".png") for p in out.rglob("*"))


def test_test_fill_is_mid_grey(release):
    out, audit = release
    with (audit / "files.csv").open() as handle:
        dst = next(row["output"] for row in csv.DictReader(handle) if row["input"] == "us-text.dcm")
    pixels = dcmread(out / dst).pixel_array
    assert (pixels[2:30, 5:150] == (20 + 255) // 2).mean() > 0.9  # where DOE^JOHN was


def test_a_rerun_with_nothing_to_do_keeps_the_page(release, tmp_path: Path):
    out, audit = release
    page = (audit / "review" / "index.html").read_text()
    run(RunConfig("basic", (), KEY, text_fill="test", pixels="none"), out.parent / "in", out, jobs=1)
    again = (audit / "review" / "index.html").read_text()
    assert again.count('class="object changed"') == page.count('class="object changed"') == 3


def chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium (Debian package chromium) is not installed: the review page cannot be opened")
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
         *arguments],
        capture_output=True, text=True, timeout=120, check=True,
    )


@pytest.mark.slow
def test_the_page_shows_every_change_in_a_browser(release, tmp_path: Path):
    _, audit = release
    url = (audit / "review" / "index.html").as_uri()
    # the pictures load lazily, as they come into view: a window that shows the whole page
    dom = chromium("--dump-dom", "--window-size=1200,12000", url, profile=tmp_path / "profile").stdout
    assert dom.count('class="object changed"') == 3
    assert dom.count('class="object sample"') == 1
    assert 'data-images-loaded="7"' in dom  # before and after of three, the sample's one: all loaded
    assert "missing" not in re.findall(r'<figure class="([^"]*)"', dom)
    assert re.findall(r'<tr class="quarantined"><td>([^<]*)</td><td>([^<]*)</td>', dom) == [
        ("broken.dcm", "truncated file")
    ]
    assert "DOE^JOHN" in dom and "PORTABLE" in dom  # the private view shows what OCR read
    assert dom.count('<rect class="ultrasound"') == 2 * 4  # outside the declared region, both pictures
    assert dom.count('<rect class="kept"') == 2 and "cdn" not in dom.lower() and "http" not in dom

    shot = tmp_path / "review.png"
    chromium(f"--screenshot={shot}", "--window-size=1100,1400", url, profile=tmp_path / "profile")
    import cv2

    picture = cv2.imread(str(shot))[..., ::-1]  # RGB
    red, green, blue = (picture[..., i].astype(int) for i in range(3))
    magenta = (red > 230) & (green < 40) & (blue > 230)  # OCR boxes outlined
    assert magenta.sum() > 500
    grey = (abs(red - 128) < 8) & (red == green) & (green == blue)  # the test fill, in the after pictures
    assert grey.sum() > 2000
    if os.environ.get("DEID_README_SCREENSHOT"):  # 128 colours: a third of the bytes, the same to the eye
        from PIL import Image

        README_SCREENSHOT.parent.mkdir(exist_ok=True)
        Image.open(shot).convert("RGB").quantize(128, dither=Image.Dither.NONE).save(README_SCREENSHOT, optimize=True)


@pytest.mark.slow
def test_pictures_come_back_from_dask_workers(release, tmp_path: Path):
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    out, audit = release
    config = RunConfig("basic", (), KEY, text_fill="test", pixels="none")
    run(config, out.parent / "in", tmp_path / "out", scheduler="local:1")
    local = sorted(p.name for p in (audit / "review" / "img").iterdir())
    assert sorted(p.name for p in (tmp_path / "out.audit" / "review" / "img").iterdir()) == local
    assert (tmp_path / "out.audit" / "boxes.csv").read_text() == (audit / "boxes.csv").read_text()


def test_text_read_from_pixels_and_input_paths_are_escaped(tmp_path: Path):
    region = {"layer": "ocr", "x": 1, "y": 1, "width": 2, "height": 2, "masked": True, "text": "<script>x()</script>"}
    changed = [{"token": "T", "output": "o.dcm", "stages": ["text"], "notes": "", "columns": 10, "rows": 10,
                "pictures": True, "regions": [region]}]
    page = write_page(tmp_path, {"counts": {"written": 1, "quarantined": 1, "skipped": 0}, "profile": "basic",
                                 "options": [], "changed": changed, "samples": [],
                                 "quarantined": [{"input": "<b>a.dcm", "reason": "truncated file"}]}).read_text()
    assert "<script>x()" not in page and "&lt;script&gt;x()" in page and "&lt;b&gt;a.dcm" in page
