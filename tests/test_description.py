"""The release description (DEIDENTIFICATION.md), series.csv and the manifest's columns: what they say,
that they hold no PHI, and that incremental runs keep them exact for the whole release."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from pydicom import dcmread

from conftest import KEY
from deid.pipeline import RunConfig, run
from deid.pseudonyms import Pseudonymizer
from test_pipeline import PHI, make_inputs

RELEASE_FILES = ("DEIDENTIFICATION.md", "manifest.csv", "series.csv")


def test_description_says_what_was_done(tmp_path: Path):
    make_inputs(tmp_path / "in")
    cut = tmp_path / "in" / "DOE_JOHN1_MRN445561" / "IM0002.dcm"
    cut.write_bytes(cut.read_bytes()[:600])
    run(RunConfig("research", ("retain_uids",), KEY, pixels="none"), tmp_path / "in", tmp_path / "out", jobs=1)
    text = (tmp_path / "out" / "DEIDENTIFICATION.md").read_text()
    assert "deid 0." in text and "PS3.15 2026c" in text
    assert f"`{Pseudonymizer(KEY).fingerprint()}`" in text
    assert "Profile **research**" in text and "retain_uids" in text
    for code in ("113100", "113111", "113108", "113107", "113105", "113110"):
        assert f"| {code} |" in text
    assert "keeps the original UIDs" in text and "shifted back by a per-patient number of days" in text
    assert "Whole image: no stage" in text
    assert "| objects written | 11 |" in text and "| patients | 3 |" in text and "| series | 3 |" in text
    assert "| inputs quarantined (not released) | 1 |" in text and "| truncated file | 1 |" in text
    assert "`deid profiles show research -o retain_uids`" in text
    assert not any(value in text for value in PHI)


def test_series_and_manifest_rows_describe_each_object(tmp_path: Path):
    make_inputs(tmp_path / "in")
    run(RunConfig("basic", (), KEY), tmp_path / "in", tmp_path / "out", jobs=1)
    manifest = list(csv.DictReader((tmp_path / "out" / "manifest.csv").open()))
    assert "profile" not in manifest[0] and "options" not in manifest[0]
    first = manifest[0]
    ds = dcmread(tmp_path / "out" / first["path"])
    assert first["sop_class_name"] == "CT Image Storage" and first["modality"] == "CT"
    assert (first["study_uid"], first["series_uid"]) == (ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert (first["rows"], first["columns"], first["frames"]) == ("8", "8", "1")
    assert first["transfer_syntax"] == str(ds.file_meta.TransferSyntaxUID)
    series = list(csv.DictReader((tmp_path / "out" / "series.csv").open()))
    assert len(series) == 3 and all(row["instances"] == "4" and row["modality"] == "CT" for row in series)
    assert {row["patient"] for row in series} == {path.name for path in (tmp_path / "out").iterdir() if path.is_dir()}
    assert {row["series_uid"] for row in series} == {row["series_uid"] for row in manifest}
    released = "".join((tmp_path / "out" / name).read_text() for name in RELEASE_FILES)
    assert not any(value in released for value in PHI)


def test_incremental_runs_keep_the_release_files_exact(tmp_path: Path):
    make_inputs(tmp_path / "all")
    shutil.copytree(tmp_path / "all", tmp_path / "part", ignore=shutil.ignore_patterns("*JOHN2*", "IM0003.dcm"))
    config = RunConfig("basic", (), KEY, pixels="none")
    run(config, tmp_path / "part", tmp_path / "nightly", jobs=1)
    shutil.copytree(tmp_path / "all", tmp_path / "part", dirs_exist_ok=True)  # the next night brings more
    second = run(config, tmp_path / "part", tmp_path / "nightly", jobs=1)
    assert 0 < second.processed < second.processed + second.resumed
    run(config, tmp_path / "all", tmp_path / "fresh", jobs=1)
    for name in RELEASE_FILES:
        assert (tmp_path / "nightly" / name).read_text() == (tmp_path / "fresh" / name).read_text(), name


def test_a_name_that_is_a_word_of_the_reports_is_no_leak_there_but_is_in_the_objects(tmp_path: Path):
    from conftest import make_ct, write
    from deid.verify import verify

    ds = make_ct(patient_name="MODALITY^SERIES", sop_uid="1.2.826.0.1.3680043.8.498.91")
    write(ds, tmp_path / "in" / "a.dcm")
    run(RunConfig("basic", (), KEY), tmp_path / "in", tmp_path / "out", jobs=1)
    assert "modality" in (tmp_path / "out" / "manifest.csv").read_text()
    assert verify(tmp_path / "out", tmp_path / "in").exit_code == 0
    (tmp_path / "out" / "planted.txt").write_text("report for Modality")
    leaks = verify(tmp_path / "out", tmp_path / "in").leaks
    assert [place for group in leaks for place, _ in group.places] == ["planted.txt"]


def test_the_model_and_its_measured_figures_come_from_its_metadata(tmp_path: Path):
    import json

    from deid.description import write_description
    from deid.shipped import default_model

    model = tmp_path / "model.onnx"
    metadata = json.loads(default_model().with_suffix(".json").read_text())
    metadata["privacy"] = {"reid_auc": 0.612, "reid_auc_std": 0.011, "real_reid_auc": 0.705,
                           "real_reid_auc_std": 0.009, "utility_auc": 0.83, "real_utility_auc": 0.84, "runs": 3,
                           "milestone": True, "card": "models/deform.md"}
    model.with_suffix(".json").write_text(json.dumps(metadata))
    identity = {"key_fingerprint": "f4aa5b431626", "profile": "basic", "profile_source": "basic", "options": [],
                "pixels": {"text": "per modality", "text_fill": "black", "whole_image": "deform"}}
    facts = {"name": "basic", "options": [], "codes": [["113100", "Basic Application Confidentiality Profile"]]}
    rows = [("a.dcm", "written", "P/S/E/I.dcm", "", "", "header+deform", "", "", "", {})]
    (tmp_path / "out").mkdir()
    write_description(tmp_path / "out", tmp_path, identity, facts, rows, model)
    text = (tmp_path / "out" / "DEIDENTIFICATION.md").read_text()
    assert f"Model `{metadata['name']}`" in text and metadata["sha256"] in text
    assert "0.612 ± 0.011 on deformed images against 0.705 ± 0.009 on real ones" in text
    assert "privacy milestone: met" in text and "objects deformed: 1" in text
    del metadata["privacy"]
    model.with_suffix(".json").write_text(json.dumps(metadata))
    write_description(tmp_path / "out", tmp_path, identity, facts, rows, model)
    assert "records no measured figures" in (tmp_path / "out" / "DEIDENTIFICATION.md").read_text()
