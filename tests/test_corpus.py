"""The whole shared corpus through `deid run` (:data:`conftest.CORPUS_CONFIGS`): no crash, every
input accounted for, no leak, every output readable by pydicom and DCMTK, and no new dciodvfy error."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from pydicom import dcmread

from conftest import CORPUS_CONFIGS, iod_errors
from deid.staging import STAGING
from deid.verify import verify

pytestmark = [pytest.mark.corpus, pytest.mark.ocr]


@pytest.fixture(scope="module", params=list(CORPUS_CONFIGS))
def corpus_output(request, corpus_runs):
    run = corpus_runs(request.param)
    return request.param, run.inputs, run.out, run.rows


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
