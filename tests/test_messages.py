"""Exit codes and messages: --fail-on, unexpected errors (70), DICOMDIRs, duplicates, profile names,
site TOML keys, the 113100 claim, --dry-run and the key file's mode."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom import dcmread
from pydicom.fileset import FileSet

from conftest import KEY, make_ct, write
from deid.cli import EXIT_CONFIG, EXIT_SOFTWARE, main
from deid.header.profiles import ProfileError, load_profile
from deid.pipeline import RunConfig, run
from test_pipeline import make_inputs


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    make_inputs(tmp_path / "in")
    return tmp_path / "in"


def cut_one(inputs: Path) -> None:
    bad = inputs / "DOE_JOHN0_MRN445560" / "IM0001.dcm"
    bad.write_bytes(bad.read_bytes()[:700])


def test_an_unchanged_rerun_exits_0_despite_old_quarantines(inputs: Path, tmp_path: Path):
    cut_one(inputs)
    first = run(RunConfig("basic", (), KEY), inputs, tmp_path / "out", jobs=1)
    assert (first.counts["quarantined"], first.new_quarantined, first.exit_code) == (1, 1, 1)
    again = run(RunConfig("basic", (), KEY), inputs, tmp_path / "out", jobs=1)
    assert (again.counts["quarantined"], again.new_quarantined, again.exit_code) == (1, 0, 0)
    strict = run(RunConfig("basic", (), KEY), inputs, tmp_path / "out", jobs=1, fail_on="any")
    assert strict.exit_code == 1
    lenient = run(RunConfig("basic", (), KEY), inputs, tmp_path / "out", jobs=1, fail_on="never")
    assert lenient.exit_code == 0
    bad = inputs / "DOE_JOHN2_MRN445562" / "IM0000.dcm"
    bad.write_bytes(bad.read_bytes()[:700])  # a new one the next night
    later = run(RunConfig("basic", (), KEY), inputs, tmp_path / "out", jobs=1)
    assert (later.new_quarantined, later.exit_code) == (1, 1)


def test_fail_on_from_the_command_line(inputs: Path, tmp_path: Path, key_file: Path):
    cut_one(inputs)
    command = ["run", str(inputs), str(tmp_path / "out"), "--key-file", str(key_file), "-j", "1", "--json-logs"]
    assert CliRunner().invoke(main, command).exit_code == 1
    assert CliRunner().invoke(main, command).exit_code == 0
    assert CliRunner().invoke(main, [*command, "--fail-on", "any"]).exit_code == 1


def test_an_unexpected_error_exits_70_in_one_line(inputs: Path, tmp_path: Path, key_file: Path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError(f"boom in {inputs}/DOE_JOHN0_MRN445560")

    monkeypatch.setattr("deid.pipeline.run", broken)
    command = ["run", str(inputs), str(tmp_path / "out"), "--key-file", str(key_file)]
    archived = CliRunner().invoke(main, [*command, "--json-logs"])
    assert archived.exit_code == EXIT_SOFTWARE == 70
    lines = archived.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in archived.output
    event = json.loads(lines[0])
    assert event["error"] == "RuntimeError" and event["where"].startswith("test_messages.py:")
    assert "DOE" not in archived.output  # the message may quote an input: not in archived logs
    console = CliRunner().invoke(main, [*command, "--console-logs"])
    assert console.exit_code == 70 and "boom" in console.output and "Traceback" not in console.output


def test_a_dicomdir_is_skipped_as_a_media_directory(inputs: Path, tmp_path: Path):
    ds = dcmread(inputs / "DOE_JOHN0_MRN445560" / "IM0000.dcm")
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    fileset = FileSet()
    fileset.add(ds)
    fileset.write(tmp_path / "media")
    (inputs / "DICOMDIR").write_bytes((tmp_path / "media" / "DICOMDIR").read_bytes())
    summary = run(RunConfig("basic", (), KEY), inputs, tmp_path / "out", jobs=1)
    assert summary.counts == {"written": 12, "quarantined": 0, "skipped": 2}
    rows = {r["input"]: r for r in csv.DictReader((tmp_path / "out.audit" / "files.csv").open())}
    assert rows["DICOMDIR"]["status"] == "skipped" and "media directory" in rows["DICOMDIR"]["reason"]
    assert not (tmp_path / "out" / "DICOMDIR").exists()


@pytest.mark.slow
def test_a_duplicate_says_which_input_was_kept(inputs: Path, tmp_path: Path, key_file: Path):
    ds = dcmread(inputs / "DOE_JOHN0_MRN445560" / "IM0001.dcm")
    write(ds, inputs / "ZZZ" / "IM0001.dcm")
    result = subprocess.run(
        [sys.executable, "-m", "deid.cli", "run", str(inputs), str(tmp_path / "out"), "--key-file",
         str(key_file), "-j", "1", "--json-logs"],
        capture_output=True, text=True,
    )
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    rows = {r["input"]: r for r in csv.DictReader((tmp_path / "out.audit" / "files.csv").open())}
    duplicate = next(e for e in events if e.get("status") == "quarantined")
    assert duplicate["kept"] == rows["DOE_JOHN0_MRN445560/IM0001.dcm"]["token"]  # a token, not the path
    assert "DOE" not in result.stderr
    assert rows["ZZZ/IM0001.dcm"]["reason"].endswith("(kept: DOE_JOHN0_MRN445560/IM0001.dcm)")
    description = (tmp_path / "out" / "DEIDENTIFICATION.md").read_text()
    assert "| another input has the same SOP Instance UID | 1 |" in description and "DOE" not in description


def test_a_misspelt_profile_gets_the_shipped_names(inputs: Path, tmp_path: Path, key_file: Path):
    with pytest.raises(ProfileError, match="did you mean 'research'") as error:
        load_profile("reserch")
    assert "basic, research" in str(error.value) and "/" not in str(error.value).split(";")[0]
    result = CliRunner().invoke(
        main, ["run", str(inputs), str(tmp_path / "out"), "--key-file", str(key_file), "-p", "reserch", "--json-logs"]
    )
    assert result.exit_code == EXIT_CONFIG and "did you mean 'research'" in result.output
    assert "_rules" not in result.output and "reserch.toml" not in result.output
    with pytest.raises(ProfileError, match="did you mean 'retain_uids'"):
        load_profile("basic", ("retain_uid",))


def site_profile(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text('[profile]\nname = "site"\nextends = "basic"\n\n' + body)
    return path


def test_unknown_keys_in_a_site_profile_are_errors(tmp_path: Path):
    misspelt = site_profile(tmp_path, '[[rule]]\nkeyword = "StudyDescription"\nactoin = "K"\n')
    expected = r"unknown key 'actoin' in \[\[rule\]\] number 1 \(did you mean 'action'\?\)"
    with pytest.raises(ProfileError, match=expected):
        load_profile(str(misspelt))
    (tmp_path / "site.toml").write_text('[profile]\nname = "site"\nextends = "basic"\noptions = []\nextend = "x"\n')
    with pytest.raises(ProfileError, match=r"unknown key 'extend' in \[profile\]"):
        load_profile(str(tmp_path / "site.toml"))
    (tmp_path / "site.toml").write_text('[profile]\nname = "site"\nextends = "basic"\n\n[[rules]]\naction = "K"\n')
    with pytest.raises(ProfileError, match="unknown key 'rules' in the file"):
        load_profile(str(tmp_path / "site.toml"))


def test_a_site_rule_keeping_patients_name_drops_the_basic_claim(inputs: Path, tmp_path: Path, key_file: Path):
    keeps_name = site_profile(tmp_path, '[[rule]]\nkeyword = "PatientName"\naction = "K"\n')
    profile = load_profile(str(keeps_name))
    assert "113100" not in [code.value for code in profile.codes]
    assert profile.weakened == ("site.toml keeps Patient's Name (0010,0010)",)
    assert "113100" in [c.value for c in load_profile("research").codes]  # shipped profiles claim it
    harmless = site_profile(tmp_path, '[[rule]]\nkeyword = "PatientName"\naction = "X"\n')
    assert "113100" in [c.value for c in load_profile(str(harmless)).codes]
    site_profile(tmp_path, '[[rule]]\nkeyword = "PatientName"\naction = "K"\n')  # as the run reads it
    command = ["run", str(inputs), str(tmp_path / "out"), "--key-file", str(key_file), "-j", "1", "--json-logs",
               "-p", str(keeps_name)]
    first = CliRunner().invoke(main, command)
    warnings = [line for line in first.output.splitlines() if "113100 is not claimed" in line]
    assert len(warnings) == 1 and "Patient's Name" in warnings[0]
    again = CliRunner().invoke(main, command)
    assert "113100" not in again.output  # said once, when the configuration was new
    written = next((tmp_path / "out").rglob("*.dcm"))
    codes = [item.CodeValue for item in dcmread(written).DeidentificationMethodCodeSequence]
    assert "113100" not in codes
    assert "not claimed" in (tmp_path / "out" / "DEIDENTIFICATION.md").read_text()


def test_dry_run_creates_no_key(inputs: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("DEID_KEY_FILE", raising=False)
    result = CliRunner().invoke(main, ["run", str(inputs), str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 0 and "a run would create" in result.output
    assert not (tmp_path / "config").exists() and not (tmp_path / "out").exists()
    assert not (tmp_path / "out.audit").exists()


def test_a_key_readable_by_others_gets_one_warning(inputs: Path, tmp_path: Path, key_file: Path):
    command = ["run", str(inputs), str(tmp_path / "out"), "--key-file", str(key_file), "-j", "1", "--json-logs"]
    private = CliRunner().invoke(main, command)
    assert "readable by other users" not in private.output
    key_file.chmod(0o444)  # a container secret mounted read-only for all
    shared = CliRunner().invoke(main, command)
    assert shared.exit_code == 0
    warnings = [line for line in shared.output.splitlines() if "readable by other users" in line]
    assert len(warnings) == 1 and "0444" in warnings[0] and "chmod 600" in warnings[0]
    assert KEY.decode() not in shared.output


def test_readme_lists_every_exit_code():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    listed = readme.split("**Exit codes.**")[1].split("\n* ")[0]
    for code in ("0", "1", "2", "3", "70", "75", "130"):
        assert f" {code} " in listed.replace("\n", " ")


def test_dicomdir_indexes_the_release_and_stays_fresh(inputs: Path, tmp_path: Path, key_file: Path):
    out = tmp_path / "out"
    (inputs / "DOE_JOHN2_MRN445562" / "IM0003.dcm").rename(tmp_path / "later.dcm")
    command = ["run", str(inputs), str(out), "--key-file", str(key_file), "-j", "1", "--json-logs"]
    assert CliRunner().invoke(main, [*command, "--dicomdir"]).exit_code == 0
    fileset = FileSet(out / "DICOMDIR")
    manifest = list(csv.DictReader((out / "manifest.csv").open()))
    assert len(fileset) == len(manifest) == 11
    for instance in fileset:
        assert Path(instance.path).relative_to(out).parts[0].startswith("PT")
        released = out / next(r["path"] for r in manifest if r["path"].endswith(f"/{instance.SOPInstanceUID}.dcm"))
        assert os.path.samefile(instance.path, released)  # a hard link, not a second copy
    record = next(iter(fileset)).node.parent.parent._record  # the STUDY record
    assert record.StudyID == "DEID"  # emptied by Basic: a dummy in the record only
    first = (out / "DICOMDIR").read_bytes()
    (tmp_path / "later.dcm").rename(inputs / "DOE_JOHN2_MRN445562" / "IM0003.dcm")
    assert CliRunner().invoke(main, command).exit_code == 0  # no --dicomdir: kept fresh all the same
    assert len(FileSet(out / "DICOMDIR")) == 12 and (out / "DICOMDIR").read_bytes() != first
    assert "`DICOMDIR`" in (out / "DEIDENTIFICATION.md").read_text()
    assert not any(value in (out / "DICOMDIR").read_bytes() for value in (b"DOE", b"MRN"))


def test_reasons_say_what_to_do(tmp_path: Path):
    radiograph = make_ct(sop_uid="1.2.826.0.1.3680043.8.498.77")
    radiograph.Modality = "CR"
    del radiograph.BurnedInAnnotation
    write(radiograph, tmp_path / "in" / "cr.dcm")
    report = make_ct(sop_uid="1.2.826.0.1.3680043.8.498.78")
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    del report.PixelData
    report.ContentSequence = report.RequestAttributesSequence[0].ReferencedStudySequence[0].ContentSequence
    write(report, tmp_path / "in" / "sr.dcm")
    run(RunConfig("basic", (), KEY, header_only=True), tmp_path / "in", tmp_path / "out", jobs=1)
    reasons = {r["input"]: r["reason"] for r in csv.DictReader((tmp_path / "out.audit" / "quarantine.csv").open())}
    assert reasons["cr.dcm"].endswith("(--header-only): run without it")
    assert reasons["sr.dcm"] == "structured content: release it with --option clean_structured_content"
