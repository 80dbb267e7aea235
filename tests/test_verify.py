"""`deid verify`: it must find what survives, stay quiet about what does not, tell values kept
by an option from leaks, and never print a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from conftest import KEY, REPO, make_ct, write
from deid.cli import main
from deid.pipeline import RunConfig, run
from deid.verify import CHECKS, Finding, collect_identifiers, find_leaks, register_check, verify
from test_pipeline import make_inputs


def test_collects_values_three_levels_deep(tmp_path: Path):
    ds = make_ct()
    level3 = Dataset()
    level3.PersonName = "KRUSTY^HERSCHEL"
    ds.ReferencedSeriesSequence = Sequence([Dataset()])
    ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence = Sequence([Dataset()])
    ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ContentSequence = Sequence([level3])
    write(ds, tmp_path / "in" / "a.dcm")
    found = collect_identifiers([tmp_path / "in"])
    sources = {i.source for i in found if i.value == "KRUSTY"}
    assert sources == {"ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ContentSequence[0].PersonName"}
    assert {"MRN445566", "ACC99887", "19610412", "SN-778899"} <= {i.value for i in found}


def test_a_uid_without_a_digit_that_is_also_a_defined_term_proves_nothing(tmp_path: Path):
    ds = make_ct()  # a damaged value: a defined term where a UID belongs
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ReferencedSOPInstanceUID = "SECONDARY"
    ds.FrameOfReferenceUID = "DOE.JOHN.MRN445566"  # not UID-shaped either, but no defined term: searched
    write(ds, tmp_path / "in" / "a.dcm")
    uids = {i.value for i in collect_identifiers([tmp_path / "in"]) if i.kind == "uid"}
    assert "SECONDARY" not in uids
    assert "DOE.JOHN.MRN445566" in uids


def test_a_short_serial_that_is_also_a_code_value_proves_nothing(tmp_path: Path):
    coded = make_ct()
    coded.DeviceSerialNumber = "1234"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "1234", "99LOCAL", "A local concept"
    coded.ConceptNameCodeSequence = Sequence([code])
    write(coded, tmp_path / "in" / "a.dcm")
    plain = make_ct(sop_uid="1.2.826.0.1.3680043.8.498.1002")
    plain.DeviceSerialNumber = "5678"  # short, but no code: still an identifier
    write(plain, tmp_path / "in" / "b.dcm")
    values = {i.value for i in collect_identifiers([tmp_path / "in"])}
    assert "1234" not in values
    assert "5678" in values


def test_finds_values_in_private_tags_and_paths_but_not_in_pixels(tmp_path: Path):
    write(make_ct(), tmp_path / "in" / "a.dcm")
    leaky = make_ct()
    for keyword in ("PatientName", "PatientID", "ReferringPhysicianName", "StudyDescription"):
        setattr(leaky, keyword, "X")
    for keyword in ("RequestAttributesSequence", "PatientAddress", "InstitutionName", "AccessionNumber",
                    "DeviceSerialNumber", "PatientBirthDate", "ImageComments", "StationName", "StudyID"):
        delattr(leaky, keyword)
    leaky.SOPInstanceUID = leaky.StudyInstanceUID = leaky.SeriesInstanceUID = "2.25.1"
    leaky.file_meta.MediaStorageSOPInstanceUID = "2.25.1"
    leaky.FrameOfReferenceUID = "2.25.2"
    del leaky.ReferencedImageSequence
    leaky.StudyDate = leaky.SeriesDate = "20000101"
    leaky.AcquisitionDateTime = "20000101"
    leaky.PixelData = b"DOE JOHN".ljust(128, b"\0")  # pixel bytes are not searched
    write(leaky, tmp_path / "out" / "MRN445566" / "b.dcm")
    report = verify(tmp_path / "out", tmp_path / "in")
    found = {(group.value, how) for group in report.leaks for _, how in group.places}
    in_private = {(value, "unread value (0029,1001)") for value in ("MRN445566", "DOE", "JOHN")}
    assert found == {("MRN445566", "path"), ("MRN445566", "bytes"), ("DOE", "bytes"), ("JOHN", "bytes")} | in_private
    # the private tag carries "DOE JOHN MRN445566": the bytes and the unread-values check find it
    assert report.exit_code == 1 and report.retained == []
    lines = list(report.lines())
    assert sum(line.startswith("LEAK") for line in lines) == 3  # one per value, with its files
    assert not any("MRN445566" in line.split(" in ")[0] for line in lines)
    assert any("MRN445566" in line.split(" in ")[0] for line in report.lines(reveal=True))


def test_clean_output_has_no_leak_and_uid_prefixes_do_not_count(tmp_path: Path):
    original = make_ct()
    write(original, tmp_path / "in" / "a.dcm")
    clean = tmp_path / "out" / "report.txt"
    clean.parent.mkdir()
    clean.write_text(f"{original.SOPInstanceUID}1 and 1{original.PatientID} and 2{original.StudyDate}")
    identifiers = collect_identifiers([tmp_path / "in"])
    assert find_leaks(tmp_path / "out", identifiers) == []
    clean.write_text(f"see {original.SOPInstanceUID}.")
    assert {leak.identifier.kind for leak in find_leaks(tmp_path / "out", identifiers)} == {"uid"}


@pytest.mark.corpus
def test_flywheel_profile_leaks_are_caught(shared: Path):
    midib = shared / "corpus" / "midib"
    result = CliRunner().invoke(main, ["verify", str(midib / "flywheel-deid"), "--against", str(midib / "original")])
    assert result.exit_code == 1
    kinds = {line.split()[1] for line in result.output.splitlines() if line.startswith("LEAK")}
    assert {"uid", "date", "device_serial"} <= kinds
    assert "name" not in kinds  # Flywheel did replace the names


def test_dates_count_only_in_outputs_of_their_own_input_when_paired(tmp_path: Path):
    write(make_ct(patient_id="MRN1", sop_uid="1.2.3.100"), tmp_path / "in" / "a.dcm")
    other = make_ct(patient_id="MRN2", sop_uid="1.2.3.200")
    other.StudyDate = "19990101"
    write(other, tmp_path / "in" / "b.dcm")
    out = tmp_path / "out" / "x.txt"
    out.parent.mkdir()
    out.write_text("19990101")  # the output of a.dcm, whose shifted date equals b's real one
    identifiers = collect_identifiers([tmp_path / "in"])
    assert [leak.identifier.origin for leak in find_leaks(tmp_path / "out", identifiers)] == ["b.dcm"]
    assert find_leaks(tmp_path / "out", identifiers, {"x.txt": "a.dcm"}) == []
    assert len(find_leaks(tmp_path / "out", identifiers, {"x.txt": "b.dcm"})) == 1


def test_values_kept_by_an_option_are_reported_apart_and_a_planted_leak_still_fails(tmp_path: Path):
    make_inputs(tmp_path / "in")
    options = ("retain_uids", "retain_device_identity")
    run(RunConfig("basic", options, KEY, header_only=True), tmp_path / "in", tmp_path / "out", jobs=1)
    runner = CliRunner()
    result = runner.invoke(main, ["verify", str(tmp_path / "out"), "--against", str(tmp_path / "in")])
    assert result.exit_code == 0, result.output
    assert "profile: basic (retain_uids, retain_device_identity; from .deid-release.json)" in result.output
    assert "RETAINED by retain_uids:" in result.output and "RETAINED by retain_device_identity:" in result.output
    assert "0 leak(s) found" in result.output and "LEAK" not in result.output
    assert "12 input DICOM objects" in result.output and "checks: header-values" in result.output

    planted = next((tmp_path / "out").rglob("*.dcm"))
    ds = dcmread(planted)
    ds.ImageComments = "seen by DOE JOHN1"
    ds.save_as(planted)
    result = runner.invoke(main, ["verify", str(tmp_path / "out"), "--against", str(tmp_path / "in"),
                                  "--format", "json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    # "DOE" (Patient's Name and a Person Name deep in a sequence) and "JOHN1", in the planted file
    groups = [(g["kind"], len(g["sources"]), len(g["files"])) for g in report["leaks"]]
    assert groups == [("name", 2, 1), ("name", 1, 1)]
    assert "value" not in report["leaks"][0]  # PHI only with --reveal
    assert {g["retained_by"] for g in report["retained"]} == {"retain_uids", "retain_device_identity"}
    assert report["checked"]["input DICOM objects"] == 12 and report["kinds"]["uid"] > 0


def test_without_a_record_of_the_profile_kept_values_are_leaks_unless_one_is_given(tmp_path: Path):
    make_inputs(tmp_path / "in", patients=1, slices=1)
    run(RunConfig("basic", ("retain_uids",), KEY, header_only=True), tmp_path / "in", tmp_path / "out", jobs=1)
    (tmp_path / "out" / ".deid-release.json").unlink()  # a release made before deid recorded its identity
    bare = ["verify", str(tmp_path / "out"), "--against", str(tmp_path / "in"), "--audit-dir", str(tmp_path)]
    result = CliRunner().invoke(main, bare)
    assert result.exit_code == 1 and "no record of the run's profile" in result.output
    result = CliRunner().invoke(main, [*bare, "--profile", "basic", "-o", "retain_uids"])
    assert result.exit_code == 0 and "RETAINED by retain_uids" in result.output
    result = CliRunner().invoke(main, [*bare, "--profile", "nonesuch"])
    assert result.exit_code == 3 and "Traceback" not in result.output


def test_inputs_with_a_corrupt_vr_are_read_as_run_reads_them_without_a_traceback(tmp_path: Path):
    data = write(make_ct(), tmp_path / "in" / "a.dcm").read_bytes()
    name = data.index(b"\x10\x00\x10\x00PN")
    (tmp_path / "in" / "a.dcm").write_bytes(data[: name + 4] + b"ZZ" + data[name + 6 :])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "note.txt").write_text("ACC99887")
    result = subprocess.run(
        [sys.executable, "-m", "deid.cli", "verify", str(tmp_path / "out"), "--against", str(tmp_path / "in")],
        capture_output=True, text=True,
    )
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == 1 and "LEAK accession AccessionNumber" in result.stdout
    assert "1 input elements not decodable (left out)" in result.stdout


def test_a_registered_check_plugs_in_and_a_failing_one_is_reported(tmp_path: Path):
    write(make_ct(), tmp_path / "in" / "a.dcm")
    write(make_ct(), tmp_path / "out" / "b.dcm")

    class Broken:
        name = "broken"

        def describe(self) -> str:
            return "always fails"

        def __call__(self, release):
            release.count("broken things", 2)
            raise RuntimeError("no")

    class Pixels:
        name = "pixels-demo"

        def describe(self) -> str:
            return "reports one pixel finding"

        def __call__(self, release):
            yield Finding(self.name, "pixels", "burned-in text", release.output_files()[0], "pixels")

    register_check(Broken)
    register_check(Pixels())
    try:
        report = verify(tmp_path / "out", tmp_path / "in", checks=["broken"])
        assert report.exit_code == 70 and report.failed == ["broken"] and report.checked["broken things"] == 2
        report = verify(tmp_path / "out", tmp_path / "in", checks=["pixels-demo"])
        assert [(g.kind, g.places) for g in report.leaks] == [("pixels", [("b.dcm", "pixels")])]
    finally:
        del CHECKS["broken"], CHECKS["pixels-demo"]


@pytest.mark.slow
def test_on_the_sample_retained_values_pass_and_a_planted_leak_fails(tmp_path: Path):
    sample = REPO / "benchmarks" / "sample"
    options = ("retain_uids", "retain_device_identity", "retain_institution_identity")
    run(RunConfig("research", options, KEY, header_only=True), sample, tmp_path / "out", jobs=1)
    command = [sys.executable, "-m", "deid.cli", "verify", str(tmp_path / "out"), "--against", str(sample)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert len(lines) < 12 and not any(line.startswith("LEAK") for line in lines)
    assert {line.split(":")[0] for line in lines if line.startswith("RETAINED")} == {
        f"RETAINED by {option}" for option in options
    }
    planted = next((tmp_path / "out").rglob("*.dcm"))
    ds = dcmread(planted)
    ds.ImageComments = "reviewed with NGUYEN"
    ds.save_as(planted)
    result = subprocess.run([*command, "--format", "json"], capture_output=True, text=True)
    assert result.returncode == 1
    leaks = json.loads(result.stdout)["leaks"]
    assert [(g["kind"], g["sources"], len(g["files"])) for g in leaks] == [("name", ["PatientName"], 1)]
