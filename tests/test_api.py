"""The Python API: deid.deidentify and deid.Pipeline, on the shipped sample, against `deid run`."""

from __future__ import annotations

import copy
import csv
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread, dcmwrite

import deid
from conftest import KEY, REPO
from deid.config import RunConfig
from deid.pipeline import run

SAMPLE = REPO / "benchmarks" / "sample"
STUDY = SAMPLE / "OKAFOR_HIROSHI_MRN1360537" / "study2_20190530"


def encoded(ds) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def test_deidentify_a_sample_dataset_and_leave_the_input_untouched():
    ds = dcmread(STUDY / "CT0001.dcm")
    before = encoded(ds)
    result = deid.deidentify(ds, key=KEY)
    assert result.status == "written" and result.reason == ""
    assert result.stages == ("header",)
    out = result.dataset
    assert out is not None and out is not ds
    assert out.PatientIdentityRemoved == "YES"
    assert "OKAFOR" not in str(out.PatientName) and out.PatientID != ds.PatientID
    assert result.uid_pairs[ds.SOPInstanceUID] == out.SOPInstanceUID == out.file_meta.MediaStorageSOPInstanceUID
    assert encoded(ds) == before  # the input is untouched
    assert ds.PatientName.family_name == "OKAFOR"


def test_a_dataset_the_stages_cannot_make_safe_is_quarantined():
    report = dcmread(STUDY / "SR0001.dcm")
    result = deid.deidentify(report, key=KEY)
    assert result.status == "quarantined" and result.dataset is None
    assert "clean_structured_content" in result.reason
    released = deid.deidentify(report, key=KEY, profile="research", options=["clean_structured_content"])
    assert released.status == "written" and released.dataset is not None


def test_a_broken_dataset_is_quarantined_never_raised():
    ds = dcmread(STUDY / "CT0001.dcm")
    del ds.SOPInstanceUID
    result = deid.deidentify(ds, key=KEY)
    assert (result.status, result.dataset) == ("quarantined", None)
    assert result.reason == "missing SOP Class UID or SOP Instance UID"


def test_pipeline_gives_deid_run_s_bytes_and_values(tmp_path: Path):
    names = ["CT0001.dcm", "CT0002.dcm", "MR0001.dcm"]
    (tmp_path / "in").mkdir()
    for name in names:
        source = STUDY / name if (STUDY / name).exists() else STUDY.parent / "study1_20230203" / name
        shutil.copy(source, tmp_path / "in" / name)
    run(RunConfig("basic", (), KEY, pixels="none"), tmp_path / "in", tmp_path / "out", jobs=1)
    rows = {row["input"]: row for row in csv.DictReader((tmp_path / "out.audit" / "files.csv").open())}
    pipeline = deid.Pipeline(key=KEY)
    for name in names:
        result = pipeline.deidentify(dcmread(tmp_path / "in" / name))
        assert result.status == rows[name]["status"] == "written"
        written = (tmp_path / "out" / rows[name]["output"]).read_bytes()
        assert encoded(result.dataset) == written, name
    rows = csv.DictReader((tmp_path / "out.audit" / "crosswalk_uids.csv").open())
    crosswalk = {row["id_old"]: row["id_new"] for row in rows}
    assert result.uid_pairs.items() <= crosswalk.items()


def test_pipeline_builds_its_stages_once_and_another_key_gives_other_pseudonyms():
    pipeline = deid.Pipeline(key=KEY)
    stages = pipeline.stages
    first = pipeline.deidentify(dcmread(STUDY / "CT0001.dcm"))
    second = pipeline.deidentify(dcmread(STUDY / "CT0002.dcm"))
    assert pipeline.stages is stages
    assert first.dataset.PatientID == second.dataset.PatientID  # one patient, one pseudonym
    other = deid.Pipeline(key=KEY[::-1]).deidentify(dcmread(STUDY / "CT0001.dcm"))
    assert other.dataset.PatientID != first.dataset.PatientID
    assert [line.split(":")[0] for line in pipeline.describe()] == ["gate", "header", "text", "provenance"]


def test_a_dataset_built_in_memory_is_taken_as_explicit_little_endian():
    from conftest import make_ct

    ds = make_ct()
    del ds.file_meta
    result = deid.deidentify(copy.deepcopy(ds), key=KEY)
    assert result.status == "written", result.reason
    assert result.dataset.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"


def test_bad_configuration_raises_at_once():
    from deid.header.profiles import ProfileError

    with pytest.raises(ProfileError):
        deid.Pipeline(key=KEY, profile="nonesuch")
    with pytest.raises(ValueError, match="16 bytes"):
        deid.deidentify(dcmread(STUDY / "CT0001.dcm"), key=b"short")


def test_import_deid_loads_no_pydicom():
    code = "import sys, deid; assert 'pydicom' not in sys.modules; print(deid.Result.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "deid.api"
