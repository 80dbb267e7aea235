"""The whole shared corpus through `deid run`: no crash, every input accounted for, no leak,
every output readable by pydicom and DCMTK, and no new dciodvfy error."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from conftest import KEY, iod_errors
from deid.pipeline import RunConfig, discover, run
from deid.verify import verify
from deid.staging import STAGING


def corpus_run(shared: Path, tmp_path_factory, profile: str) -> tuple[Path, Path, list[dict]]:
    """The corpus through ``profile``: basic with the pixel stages, research header-only."""
    out = tmp_path_factory.mktemp(profile) / "out"
    config = RunConfig(profile, (), KEY, header_only=profile == "research")
    summary = run(config, shared / "corpus", out, jobs=2)
    rows = list(csv.DictReader((out.parent / "out.audit" / "files.csv").open()))
    assert sum(summary.counts.values()) == len(discover(shared / "corpus")) == len(rows)
    return shared / "corpus", out, rows


@pytest.fixture(scope="module", params=["basic", "research"])
def corpus_output(request, tmp_path_factory):
    from conftest import shared_dir

    shared = shared_dir()
    if shared is None:
        pytest.skip("shared data not found: set DEID_SHARED")
    return request.param, *corpus_run(shared, tmp_path_factory, request.param)


def test_every_input_is_accounted_for_with_a_reason(corpus_output):
    _, _, out, rows = corpus_output
    written = [r for r in rows if r["status"] == "written"]
    assert len(written) > 100
    assert all(r["reason"] for r in rows if r["status"] != "written")
    assert not any(r["reason"].startswith("internal error") for r in rows)
    assert len(list(out.rglob("*.dcm"))) == len(written)
    assert not (out / STAGING).exists()


def test_no_identifying_value_survives(corpus_output):
    _, inputs, out, _ = corpus_output
    report = verify(out, inputs)
    assert report.exit_code == 0, list(report.lines())[:20]


def test_outputs_open_in_pydicom_and_dcmdump(corpus_output):
    _, _, out, _ = corpus_output
    paths = sorted(out.rglob("*.dcm"))
    for path in paths:
        ds = dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    if shutil.which("dcmdump") is None:
        pytest.skip("dcmdump (Debian dcmtk) is not installed")
    for path in paths:
        result = subprocess.run(["dcmdump", "-q", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, (path, result.stderr[:500])


def test_dciodvfy_finds_no_new_error(corpus_output):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed")
    _, inputs, out, rows = corpus_output
    new_errors = {}
    for row in rows:
        if row["status"] != "written":
            continue
        added = iod_errors(out / row["output"]) - iod_errors(inputs / row["input"])
        if added:
            new_errors[row["input"]] = sorted(added)
    assert new_errors == {}
