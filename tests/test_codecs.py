"""Decoders of the default install: JPEG Lossless by GDCM, the listing of decodable syntaxes, and
a quarantine reason that names the syntax and the extra that would decode it."""

from __future__ import annotations

import csv
import importlib.util
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom import dcmread
from pydicom.uid import JPEGLossless, JPEGLosslessSV1

from conftest import KEY
from deid.cli import main
from deid.pipeline import RunConfig, run
from deid.pixels.codecs import decodable_syntaxes, pixel_array
from deid.stage import Quarantined


def jpeg_lossless_inputs(shared: Path) -> list[str]:
    """The shared corpus's JPEG Lossless (Process 14) objects with pixel data."""
    with (shared / "corpus" / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        row["path"] for row in rows
        if row["transfer_syntax"].startswith("JPEG Lossless") and row["pixel_decode"] != "no pixel data"
    ]


def test_gdcm_decodes_jpeg_lossless_in_the_default_install():
    syntaxes = dict(decodable_syntaxes())
    assert "gdcm" in syntaxes[JPEGLossless] and "gdcm" in syntaxes[JPEGLosslessSV1]


@pytest.mark.corpus
@pytest.mark.ocr
def test_corpus_jpeg_lossless_objects_decode_and_none_is_quarantined(shared: Path, tmp_path: Path):
    paths = jpeg_lossless_inputs(shared)
    assert len(paths) >= 4
    inputs = tmp_path / "in"
    for path in paths:
        ds = dcmread(shared / "corpus" / path)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        assert pixel_array(ds, "test").size == int(ds.Rows) * int(ds.Columns) * frames * int(ds.SamplesPerPixel)
        target = inputs / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared / "corpus" / path, target)
    summary = run(RunConfig("basic", (), KEY), inputs, tmp_path / "out", jobs=1)
    with (tmp_path / "out.audit" / "files.csv").open(newline="") as handle:
        rows = {row["input"]: row for row in csv.DictReader(handle)}
    assert {name: row["reason"] for name, row in rows.items() if row["status"] != "written"} == {}
    assert summary.counts["written"] == len(paths)


@pytest.mark.corpus
def test_an_undecodable_object_names_its_syntax_and_the_extra(shared: Path):
    """12-bit JPEG Extended: only the GPL decoder (the gpl-codecs extra) takes it."""
    ds = dcmread(shared / "corpus" / "pydicom-testfiles" / "JPEG-lossy.dcm")
    assert int(ds.BitsStored) == 12
    if importlib.util.find_spec("libjpeg") is not None:  # the extra is installed here
        assert pixel_array(ds, "text detection").shape == (int(ds.Rows), int(ds.Columns))
        return
    with pytest.raises(Quarantined) as caught:
        pixel_array(ds, "text detection")
    reason = str(caught.value)
    assert "JPEG Extended (Process 2 and 4)" in reason and "gpl-codecs" in reason


def test_version_and_dry_run_list_the_decodable_syntaxes(tmp_path: Path, key_file: Path):
    version = CliRunner().invoke(main, ["--version"])
    assert version.exit_code == 0
    assert "JPEG Lossless, Non-Hierarchical (Process 14)" in version.output and "gdcm" in version.output
    (tmp_path / "in").mkdir()
    dry = CliRunner().invoke(main, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "--dry-run",
                                    "--key-file", str(key_file)])
    assert dry.exit_code == 0, dry.output
    assert "JPEG Lossless, Non-Hierarchical (Process 14) (1.2.840.10008.1.2.4.57): gdcm" in dry.output
    assert not (tmp_path / "out").exists()
