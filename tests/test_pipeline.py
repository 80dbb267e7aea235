"""`deid run` end to end on generated inputs: outcomes, determinism, resume, lock, audit."""

from __future__ import annotations

import csv
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pydicom import dcmread

from conftest import KEY, make_ct, write
from deid.audit import FileResult
from deid.cli import EXIT_LOCKED, main
from deid.pipeline import DUPLICATE_REASON, LOCK_NAME, FolderLock, RunConfig, _settle_duplicates, run

PHI = ("DOE", "JOHN", "MRN445566", "19610412", "ACC99887", "Springfield", "SN-778899")


def make_inputs(root: Path, patients: int = 3, slices: int = 4) -> None:
    for p in range(patients):
        for s in range(slices):
            ds = make_ct(
                patient_name=f"DOE^JOHN{p}",
                patient_id=f"MRN44556{p}",
                sop_uid=f"1.2.826.0.1.3680043.8.498.1{p}{s:03d}",
                study_uid=f"1.2.826.0.1.3680043.8.498.2{p}",
                series_uid=f"1.2.826.0.1.3680043.8.498.3{p}",
            )
            write(ds, root / f"DOE_JOHN{p}_MRN44556{p}" / f"IM{s:04d}.dcm")
    (root / "README.txt").write_text("not dicom")


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    make_inputs(root)
    return root


def test_every_input_reaches_one_end(inputs: Path, tmp_path: Path):
    corrupt = inputs / "DOE_JOHN1_MRN445561" / "IM0002.dcm"
    corrupt.write_bytes(corrupt.read_bytes()[:600])  # cut inside the header
    summary = run(RunConfig("basic", (), KEY), inputs, tmp_path / "out", jobs=1)
    assert summary.counts == {"written": 11, "quarantined": 1, "skipped": 1}
    assert summary.exit_code == 1
    rows = list(csv.DictReader((tmp_path / "out.audit" / "quarantine.csv").open()))
    assert [r["input"] for r in rows] == ["DOE_JOHN1_MRN445561/IM0002.dcm"]
    assert rows[0]["reason"]
    outputs = [p for p in (tmp_path / "out").rglob("*.dcm")]
    assert len(outputs) == 11
    for path in outputs:
        relative = path.relative_to(tmp_path / "out").as_posix()
        assert not any(v.lower() in relative.lower() for v in PHI)
        data = path.read_bytes()
        assert data[:128] == b"\x00" * 128
        assert not any(v.encode() in data for v in PHI), relative
    manifest = (tmp_path / "out" / "manifest.csv").read_text()
    assert len(manifest.splitlines()) == 12
    assert not any(v in manifest for v in PHI)


@pytest.mark.slow
def test_same_result_across_runs_and_worker_counts(inputs: Path, tmp_path: Path):
    run(RunConfig("research", (), KEY), inputs, tmp_path / "a", jobs=1)
    run(RunConfig("research", (), KEY), inputs, tmp_path / "b", jobs=2)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    crosswalk_a = (tmp_path / "a.audit" / "crosswalk_uids.csv").read_text()
    assert crosswalk_a == (tmp_path / "b.audit" / "crosswalk_uids.csv").read_text()
    patients = list(csv.DictReader((tmp_path / "a.audit" / "crosswalk_patient_ids.csv").open()))
    assert sorted(r["id_old"] for r in patients) == ["MRN445560", "MRN445561", "MRN445562"]


def test_study_stays_one_study(inputs: Path, tmp_path: Path):
    run(RunConfig("basic", (), KEY), inputs, tmp_path / "out", jobs=1)
    studies = {}
    for path in (tmp_path / "out").rglob("*.dcm"):
        ds = dcmread(path)
        studies.setdefault(str(ds.PatientID), set()).add(str(ds.StudyInstanceUID))
    assert len(studies) == 3 and all(len(s) == 1 for s in studies.values())


def test_rerun_processes_nothing_and_changes_nothing(inputs: Path, tmp_path: Path):
    run(RunConfig("basic", (), KEY), inputs, tmp_path / "out", jobs=1)
    before = tree_digest(tmp_path / "out")
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*")}
    summary = run(RunConfig("basic", (), KEY), inputs, tmp_path / "out", jobs=1)
    assert summary.processed == 0 and summary.resumed == 13
    assert tree_digest(tmp_path / "out") == before
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*")} == mtimes  # nothing written


def test_rerun_over_an_unchanged_tree_does_not_load_pydicom(inputs: Path, tmp_path: Path):
    run(RunConfig("basic", (), KEY), inputs, tmp_path / "out", jobs=1)
    rerun = (
        "import sys; from pathlib import Path; from deid.pipeline import RunConfig, run; "
        f"s = run(RunConfig('basic', (), {KEY!r}), Path({str(inputs)!r}), Path({str(tmp_path / 'out')!r}), jobs=1); "
        "print(s.processed, s.resumed, 'pydicom' in sys.modules)"
    )
    quiet = subprocess.run([sys.executable, "-c", rerun + "; print('jinja2' in sys.modules)"],
                           capture_output=True, text=True, check=True)
    assert quiet.stdout.split()[-4:] == ["0", "13", "False", "False"]  # nor the templates of description and review
    (inputs / "DOE_JOHN0_MRN445560" / "IM0000.dcm").touch()  # a changed input is redone
    redone = subprocess.run([sys.executable, "-c", rerun], capture_output=True, text=True, check=True)
    assert redone.stdout.split()[-3:] == ["1", "12", "True"]  # after the file's log event


def test_large_pixel_data_is_copied_whole_or_quarantined_when_cut(tmp_path: Path):
    pixels = np.arange(512 * 512, dtype=np.int16).reshape(512, 512)  # 512 KB: read lazily
    ds = make_ct()
    ds.Rows = ds.Columns = 512
    ds.PixelData = pixels.tobytes()
    whole = write(ds, tmp_path / "in" / "whole.dcm")
    cut = tmp_path / "in" / "cut.dcm"
    cut.write_bytes(whole.read_bytes()[: -100_000])
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1002"
    write(ds, tmp_path / "in" / "other.dcm")
    summary = run(RunConfig("basic", (), KEY, header_only=True), tmp_path / "in", tmp_path / "out", jobs=1)
    assert summary.counts == {"written": 2, "quarantined": 1, "skipped": 0}
    reasons = list(csv.DictReader((tmp_path / "out.audit" / "quarantine.csv").open()))
    assert [(r["input"], r["reason"]) for r in reasons] == [("cut.dcm", "truncated file")]
    for path in (tmp_path / "out").rglob("*.dcm"):
        assert dcmread(path).PixelData == pixels.tobytes()


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path: Path, key_file: Path):
    inputs = tmp_path / "in"
    make_inputs(inputs, patients=6, slices=25)
    env = {**os.environ, "DEID_KEY_FILE": str(key_file)}
    command = [sys.executable, "-m", "deid.cli", "run", str(inputs)]
    subprocess.run([*command, str(tmp_path / "ref"), "-j", "1"], env=env, check=False)
    victim = subprocess.Popen([*command, str(tmp_path / "out"), "-j", "1"], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list((tmp_path / "out").rglob("*.dcm"))) < 20:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    written = len(list((tmp_path / "out").rglob("*.dcm")))
    assert 0 < written < 150, "the run must be killed in the middle"
    finished = subprocess.run([*command, str(tmp_path / "out"), "-j", "1"], env=env, check=False)
    assert finished.returncode == 0
    assert tree_digest(tmp_path / "out") == tree_digest(tmp_path / "ref")


def test_a_second_run_on_a_locked_output_exits_75(inputs: Path, tmp_path: Path, key_file: Path):
    with FolderLock(tmp_path / "out"):
        result = CliRunner().invoke(
            main, ["run", str(inputs), str(tmp_path / "out"), "--key-file", str(key_file)]
        )
    assert result.exit_code == EXIT_LOCKED
    assert [p.name for p in (tmp_path / "out").iterdir()] == [LOCK_NAME]
    assert not (tmp_path / "out.audit").exists()


def test_cli_reports_bad_profile_as_configuration_error(inputs: Path, tmp_path: Path, key_file: Path):
    result = CliRunner().invoke(
        main,
        ["run", str(inputs), str(tmp_path / "out"), "--key-file", str(key_file), "-p", "nope"],
    )
    assert result.exit_code == 3
    assert not (tmp_path / "out").exists()


def test_audit_folder_inside_output_is_refused(inputs: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="outside"):
        run(RunConfig("basic", (), KEY), inputs, tmp_path / "out", tmp_path / "out" / "audit")


def test_one_output_per_sop_instance(inputs: Path, tmp_path: Path):
    original = inputs / "DOE_JOHN0_MRN445560" / "IM0001.dcm"
    ds = dcmread(original)
    ds.PixelData = bytes(len(ds.PixelData))  # same SOP Instance UID, other content
    write(ds, inputs / "ZZZ" / "IM0001.dcm")
    summary = run(RunConfig("basic", (), KEY), inputs, tmp_path / "out", jobs=1)
    assert summary.counts == {"written": 12, "quarantined": 1, "skipped": 1}
    rows = {r["input"]: r for r in csv.DictReader((tmp_path / "out.audit" / "files.csv").open())}
    assert rows["ZZZ/IM0001.dcm"]["status"] == "quarantined"
    assert rows["ZZZ/IM0001.dcm"]["reason"] == (
        "another input has the same SOP Instance UID (kept: DOE_JOHN0_MRN445560/IM0001.dcm)"
    )
    kept = tmp_path / "out" / rows["DOE_JOHN0_MRN445560/IM0001.dcm"]["output"]
    assert dcmread(kept).PixelData == dcmread(original).PixelData  # the first by input path


@pytest.mark.parametrize("folder", ["AAA", "ZZZ"])
def test_an_input_added_later_with_a_written_sop_instance_uid_keeps_one_output(
    inputs: Path, tmp_path: Path, folder: str
):
    run(RunConfig("basic", (), KEY), inputs, tmp_path / "out", jobs=1)
    original = inputs / "DOE_JOHN0_MRN445560" / "IM0001.dcm"
    ds = dcmread(original)
    ds.PixelData = bytes(len(ds.PixelData))  # same SOP Instance UID, other content
    write(ds, inputs / folder / "IM0001.dcm")
    summary = run(RunConfig("basic", (), KEY), inputs, tmp_path / "out", jobs=1)
    assert summary.counts == {"written": 12, "quarantined": 1, "skipped": 1}
    manifest = [r["path"] for r in csv.DictReader((tmp_path / "out" / "manifest.csv").open())]
    assert len(manifest) == len(set(manifest)) == 12
    rows = {r["input"]: r for r in csv.DictReader((tmp_path / "out.audit" / "files.csv").open())}
    first, later = sorted(["DOE_JOHN0_MRN445560/IM0001.dcm", f"{folder}/IM0001.dcm"])
    assert rows[later]["status"] == "quarantined" and rows[later]["reason"].startswith(DUPLICATE_REASON)
    kept = dcmread(tmp_path / "out" / rows[first]["output"])
    assert kept.PixelData == dcmread(inputs / first).PixelData  # the first by input path
    assert run(RunConfig("basic", (), KEY), inputs, tmp_path / "out", jobs=1).processed == 0


def test_an_input_that_replaced_a_vanished_one_takes_its_place(inputs: Path, tmp_path: Path):
    run(RunConfig("basic", (), KEY), inputs, tmp_path / "out", jobs=1)
    original = inputs / "DOE_JOHN0_MRN445560" / "IM0001.dcm"
    moved = inputs / "ZZZ" / "IM0001.dcm"
    moved.parent.mkdir()
    original.rename(moved)
    run(RunConfig("basic", (), KEY), inputs, tmp_path / "out", jobs=1)
    rows = {r["input"]: r for r in csv.DictReader((tmp_path / "out.audit" / "files.csv").open())}
    assert rows["ZZZ/IM0001.dcm"]["status"] == "written"
    assert rows["DOE_JOHN0_MRN445560/IM0001.dcm"]["status"] == "quarantined"
    manifest = [r["path"] for r in csv.DictReader((tmp_path / "out" / "manifest.csv").open())]
    assert len(manifest) == len(set(manifest)) == 12


def test_a_later_result_with_the_first_input_path_wins():
    by_dst: dict = {}
    later = FileResult("b.dcm", "written", dst="x.dcm", sha256="b", uid_pairs={"1.2.3": "2.25.9"})
    assert _settle_duplicates(by_dst, later, lambda src: None) == [later]
    assert later.uid_pairs and by_dst["x.dcm"].uid_pairs == {}  # recorded; the driver keeps no crosswalk
    again = FileResult("a.dcm", "written", dst="x.dcm", sha256="a again")
    winner, loser = _settle_duplicates(by_dst, FileResult("a.dcm", "written", dst="x.dcm", sha256="a"),
                                       lambda src: again)
    assert winner is again
    assert (loser.src, loser.status, loser.dst, loser.uid_pairs) == ("b.dcm", "quarantined", "", {})
    assert by_dst["x.dcm"].src == "a.dcm" and by_dst["x.dcm"].uid_pairs == {}
