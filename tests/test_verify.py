"""`deid verify`: it must find what survives and stay quiet about what does not."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from conftest import make_ct, write
from deid.cli import main
from deid.verify import collect_identifiers, find_leaks, format_leak, verify


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
    leaks = verify(tmp_path / "out", tmp_path / "in")
    found = {(leak.identifier.value, leak.how) for leak in leaks}
    assert found == {("MRN445566", "path"), ("MRN445566", "bytes"), ("DOE", "bytes"), ("JOHN", "bytes")}
    # the private tag carries "DOE JOHN MRN445566"
    line = format_leak(leaks[0])
    assert "MRN445566" not in line.split(" in ")[0] and "LEAK" in line


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
