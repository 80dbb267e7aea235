"""Faults lose nothing: a full disk, a killed or terminated driver, bad worker arguments, a locked
or foreign output folder."""

from __future__ import annotations

import csv
import errno
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom.encaps import encapsulate
from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless

from conftest import KEY, make_ct, write
from deid import executors, staging, writer
from deid.audit import COMMIT_SECONDS, FileResult, Ledger
from deid.cli import EXIT_IO, EXIT_LOCKED, EXIT_TERMINATED, main
from deid.executors import worker_count
from deid.faults import EnvironmentFault
from deid.lifeline import Terminated
from deid.pipeline import LOCK_NAME, FolderLock, RunConfig, run
from deid.staging import STAGING
from test_pipeline import make_inputs, tree_digest

CONFIG = RunConfig("basic", (), KEY)


def _folders(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_dir()]


def _ledger_rows(audit: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(audit / "ledger.sqlite") as db:
        return list(db.execute("SELECT src, status, reason FROM files ORDER BY src"))


# --- a full disk -------------------------------------------------------------------------------


class FailsAfter:
    """:func:`deid.staging.write_staged` whose writes fail with ``error`` half-way through the file
    after ``after`` good ones, as on a full disk."""

    def __init__(self, after: int, error: int) -> None:
        self.after, self.error, self.calls = after, error, 0

    def __call__(self, output_root: Path, relpath: Path, pieces) -> None:
        self.calls += 1
        if self.calls > self.after:
            pieces = self._fail_after_first(list(pieces))
        staging.write_staged(output_root, relpath, pieces)

    def _fail_after_first(self, pieces):
        yield pieces[0]
        raise OSError(self.error, os.strerror(self.error))


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EROFS, errno.EACCES])
def test_an_unwritable_output_stops_the_run_and_blames_no_input(tmp_path: Path, monkeypatch, error: int):
    inputs = tmp_path / "in"
    make_inputs(inputs, patients=3, slices=5)
    run(CONFIG, inputs, tmp_path / "ref", jobs=1)

    monkeypatch.setattr(writer, "write_staged", FailsAfter(7, error))
    with pytest.raises(EnvironmentFault, match=f"cannot write the output folder: .*{errno.errorcode[error]}"):
        run(CONFIG, inputs, tmp_path / "out", jobs=1)
    rows = _ledger_rows(tmp_path / "out.audit")
    assert [status for _, status, _ in rows] == ["written"] * 7  # nothing else recorded, nothing blamed
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 7
    assert not (tmp_path / "out" / STAGING).exists()
    assert all(any(folder.iterdir()) for folder in _folders(tmp_path / "out")), "empty folders left"

    monkeypatch.undo()  # space freed
    summary = run(CONFIG, inputs, tmp_path / "out", jobs=1)
    assert summary.processed == 16 - 7 and summary.counts == {"written": 15, "quarantined": 0, "skipped": 1}
    assert tree_digest(tmp_path / "out") == tree_digest(tmp_path / "ref")


def test_a_full_audit_folder_stops_the_run(tmp_path: Path, monkeypatch):
    inputs = tmp_path / "in"
    make_inputs(inputs, patients=2, slices=5)
    run(CONFIG, inputs, tmp_path / "ref", jobs=1)
    record = Ledger.record

    def full(self, result, token):
        if self._pending >= 3:
            raise sqlite3.OperationalError("database or disk is full")
        record(self, result, token)

    monkeypatch.setattr(Ledger, "record", full)
    with pytest.raises(EnvironmentFault, match="cannot write the audit folder: database or disk is full"):
        run(CONFIG, inputs, tmp_path / "out", jobs=1)
    monkeypatch.undo()
    summary = run(CONFIG, inputs, tmp_path / "out", jobs=1)
    assert summary.counts == {"written": 10, "quarantined": 0, "skipped": 1}
    assert tree_digest(tmp_path / "out") == tree_digest(tmp_path / "ref")
    assert (tmp_path / "out.audit" / "files.csv").read_text() == (tmp_path / "ref.audit" / "files.csv").read_text()


def test_cli_says_one_line_and_exits_74_on_a_full_disk(tmp_path: Path, monkeypatch, key_file: Path):
    make_inputs(tmp_path / "in", patients=1, slices=3)
    monkeypatch.setattr(writer, "write_staged", FailsAfter(1, errno.ENOSPC))
    result = CliRunner().invoke(
        main, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "--key-file", str(key_file), "-j", "1",
               "--json-logs"]
    )
    assert result.exit_code == EXIT_IO
    last = result.output.strip().splitlines()[-1]
    assert "No space left on device (ENOSPC)" in last and "Traceback" not in result.output


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 400 KB tmpfs (tmpfs gives every file a 4 KB page): mounted, and unmounted after the test."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mountpoint)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.mark.slow
def test_a_real_full_disk_loses_nothing(small_disk: Path, tmp_path: Path, key_file: Path):
    inputs = tmp_path / "in"
    make_inputs(inputs, patients=4, slices=40)  # 160 outputs, about 660 KB on tmpfs
    command = [sys.executable, "-m", "deid.cli", "run", str(inputs), "--key-file", str(key_file), "-j", "2"]
    subprocess.run([*command, str(tmp_path / "ref")], check=True, capture_output=True)
    out, audit = small_disk / "out", tmp_path / "out.audit"

    full = subprocess.run([*command, str(out), "--audit-dir", str(audit)], capture_output=True, text=True)
    assert full.returncode == EXIT_IO, full.stderr
    assert "No space left on device (ENOSPC)" in full.stderr.strip().splitlines()[-1]
    assert "Traceback" not in full.stderr
    rows = _ledger_rows(audit)
    assert rows and {status for _, status, _ in rows} == {"written"}
    assert 0 < len(rows) <= len(list(out.rglob("*.dcm"))) < 160
    assert not (out / STAGING).exists()
    assert all(any(folder.iterdir()) for folder in _folders(out)), "empty folders left"

    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)  # space freed
    again = subprocess.run([*command, str(out), "--audit-dir", str(audit)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert tree_digest(out) == tree_digest(tmp_path / "ref")
    assert (audit / "files.csv").read_text() == (tmp_path / "ref.audit" / "files.csv").read_text()


def test_the_ledger_commits_within_a_second_of_a_record(tmp_path: Path):
    ledger = Ledger(tmp_path / "audit", "config")
    try:
        for number in range(5):  # a burst, as a finished chunk brings, then nothing for a while
            ledger.record(FileResult(f"f{number}.dcm", "skipped", reason="not DICOM"), f"t{number}")
        deadline = time.monotonic() + 1 + COMMIT_SECONDS
        seen = 0
        while seen < 5 and time.monotonic() < deadline:  # what a run killed now would find
            time.sleep(0.05)
            with sqlite3.connect(tmp_path / "audit" / "ledger.sqlite") as other:
                seen = other.execute("SELECT COUNT(*) FROM files").fetchone()[0]
        assert seen == 5
    finally:
        ledger.close()


@pytest.mark.slow
def test_a_timed_commit_that_fails_is_raised_in_the_driver(tmp_path: Path, monkeypatch):
    ledger = Ledger(tmp_path / "audit", "config")
    ledger.record(FileResult("a.dcm", "skipped"), "t")

    class FullDisk:
        def __init__(self, db):
            self.db = db

        def commit(self):
            raise sqlite3.OperationalError("database or disk is full")

        def __getattr__(self, name):
            return getattr(self.db, name)

    real = ledger.db
    ledger.db = FullDisk(real)
    time.sleep(COMMIT_SECONDS + 0.5)
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        ledger.record(FileResult("b.dcm", "skipped"), "t")
    ledger.db = real
    ledger.close()


# --- a killed or terminated driver -------------------------------------------------------------


def _session(sid: int) -> list[int]:
    """The live processes of session ``sid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] not in "ZX":
                pids.append(int(entry))
    return pids


def _wait_until_gone(sid: int, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    left = _session(sid)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _session(sid)
    return left


def _logged_files(stderr: Path) -> int:
    return stderr.read_text().count('"event": "file"')


@pytest.fixture
def driver(tmp_path: Path, key_file: Path):
    """Start ``deid run`` with two local workers in a session of its own; return it once it has
    logged results and written 40 files (of 400). Whatever is left of the session is killed after
    the test."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to find the run's processes")
    inputs = tmp_path / "in"
    make_inputs(inputs, patients=4, slices=100)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "deid.cli", "run", str(inputs), str(out), "--key-file", str(key_file), "-j", "2"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=(tmp_path / "stderr").open("w"),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and (
        len(list(out.rglob("*.dcm"))) < 40 or not _logged_files(tmp_path / "stderr")
    ):
        time.sleep(0.05)
    assert len(_session(process.pid)) >= 4, "driver, forkserver and two workers"
    yield process
    for pid in _session(process.pid):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_killed_driver_leaves_no_process_behind(driver):
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert _wait_until_gone(driver.pid, 70) == []


@pytest.mark.slow
def test_sigterm_stops_the_workers_flushes_the_ledger_and_exits_143(driver, tmp_path: Path, key_file: Path):
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(timeout=60) == EXIT_TERMINATED, (tmp_path / "stderr").read_text()[-1500:]
    assert _wait_until_gone(driver.pid, 10) == []
    lines = (tmp_path / "stderr").read_text().strip().splitlines()
    assert "terminated" in lines[-1] and "Traceback" not in "\n".join(lines)
    recorded = _ledger_rows(tmp_path / "out.audit")
    # every result logged is recorded (SIGTERM may fall between recording one and logging it)
    assert 0 < _logged_files(tmp_path / "stderr") <= len(recorded) <= _logged_files(tmp_path / "stderr") + 1
    assert len(recorded) <= len(list((tmp_path / "out").rglob("*.dcm")))
    summary = run(CONFIG, tmp_path / "in", tmp_path / "out", jobs=1)
    assert summary.resumed == len(recorded)
    assert summary.counts == {"written": 400, "quarantined": 0, "skipped": 1}


def test_a_clean_up_that_fails_after_sigterm_still_exits_143(tmp_path: Path, key_file: Path, monkeypatch):
    make_inputs(tmp_path / "in", patients=1, slices=2)

    def stopped_then_broken(*args, **kwargs):
        try:
            raise Terminated
        finally:
            raise RuntimeError("shutdown failed")  # what a clean-up cut short may raise

    monkeypatch.setattr("deid.pipeline.run", stopped_then_broken)
    result = CliRunner().invoke(
        main, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "--key-file", str(key_file), "--json-logs"]
    )
    assert result.exit_code == EXIT_TERMINATED
    assert "terminated" in result.output.strip().splitlines()[-1]


# --- bad worker arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--jobs", "0"], "--jobs"),
        (["--jobs", "-1"], "--jobs"),
        (["--scheduler", "local:0"], "positive number of workers"),
        (["--scheduler", "local:abc"], "positive number of workers"),
        (["--scheduler", "127.0.0.1:8786"], "tcp://host:8786"),
    ],
)
def test_bad_worker_arguments_are_usage_errors(tmp_path: Path, key_file: Path, arguments, message):
    make_inputs(tmp_path / "in", patients=1, slices=2)
    result = CliRunner().invoke(
        main, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "--key-file", str(key_file), *arguments]
    )
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_an_unreachable_scheduler_is_a_configuration_error_within_the_timeout(
    tmp_path: Path, key_file: Path, monkeypatch
):
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT", 2)
    make_inputs(tmp_path / "in", patients=1, slices=2)
    started = time.monotonic()
    result = CliRunner().invoke(
        main, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "--key-file", str(key_file),
               "--scheduler", "tcp://127.0.0.1:1", "--json-logs"]
    )
    assert result.exit_code == 3
    assert time.monotonic() - started < 15
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1 within 2 s" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_worker_count_is_capped_by_the_cores_and_the_work():
    from loky import cpu_count

    assert worker_count(1000, 40) == min(40, cpu_count())
    assert worker_count(None, 3) == min(3, cpu_count())
    assert worker_count(4, 1) == 1
    with pytest.raises(ValueError, match="positive"):
        worker_count(0, 40)


@pytest.mark.slow
def test_a_thousand_jobs_on_forty_files_finish(tmp_path: Path, key_file: Path):
    make_inputs(tmp_path / "in", patients=2, slices=20)
    result = subprocess.run(
        [sys.executable, "-m", "deid.cli", "run", str(tmp_path / "in"), str(tmp_path / "out"),
         "--key-file", str(key_file), "--jobs", "1000"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 40


# --- the output folder: locked, foreign, audit inside -----------------------------------------


def test_two_runs_with_other_audit_folders_do_not_share_an_output(tmp_path: Path, key_file: Path):
    make_inputs(tmp_path / "in", patients=1, slices=2)
    with FolderLock(tmp_path / "out"):  # a run with the default audit folder holds OUT
        result = CliRunner().invoke(
            main, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "--key-file", str(key_file),
                   "--audit-dir", str(tmp_path / "elsewhere")]
        )
    assert result.exit_code == EXIT_LOCKED
    assert not (tmp_path / "elsewhere").exists()


def test_a_foreign_output_folder_is_refused_untouched(tmp_path: Path, key_file: Path):
    make_inputs(tmp_path / "in", patients=1, slices=2)
    foreign = tmp_path / "out"
    (foreign / ".deid-staging").mkdir(parents=True)
    (foreign / ".deid-staging" / "keep.txt").write_text("theirs")
    (foreign / "manifest.csv").write_text("name,size\nx,1\n")
    before = tree_digest(foreign)
    result = CliRunner().invoke(
        main, ["run", str(tmp_path / "in"), str(foreign), "--key-file", str(key_file), "--json-logs"]
    )
    assert result.exit_code == 3
    assert "is not empty and is not a deid release" in result.output
    assert tree_digest(foreign) == before and not (foreign / LOCK_NAME).exists()


def test_a_release_and_an_empty_folder_are_accepted(tmp_path: Path):
    make_inputs(tmp_path / "in", patients=1, slices=2)
    (tmp_path / "empty").mkdir()
    assert run(CONFIG, tmp_path / "in", tmp_path / "empty", jobs=1).counts["written"] == 2
    assert run(CONFIG, tmp_path / "in", tmp_path / "empty", jobs=1).resumed == 3


@pytest.mark.parametrize("inside", ["in", "out"])
def test_an_audit_folder_inside_the_input_or_output_is_refused(tmp_path: Path, inside: str):
    make_inputs(tmp_path / "in", patients=1, slices=2)
    with pytest.raises(ValueError, match=f"outside the {'input' if inside == 'in' else 'output'} folder"):
        run(CONFIG, tmp_path / "in", tmp_path / "out", tmp_path / inside / "audit", jobs=1)
    assert not (tmp_path / "out").exists()


# --- hostile files -----------------------------------------------------------------------------


def _reasons(audit: Path) -> dict[str, str]:
    return {r["input"]: r["reason"] for r in csv.DictReader((audit / "quarantine.csv").open())}


def test_decompression_bombs_are_quarantined(tmp_path: Path):
    inputs = tmp_path / "in"
    bomb = make_ct(sop_uid="1.2.826.0.1.3680043.8.498.1901")
    bomb.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    bomb.add_new(0x00091010, "OB", bytes(64 * 1024**2))  # 64 MiB of zeros: about 64 KB deflated
    path = write(bomb, inputs / "bomb.dcm")
    assert path.stat().st_size < 256 * 1024
    declared = make_ct(sop_uid="1.2.826.0.1.3680043.8.498.1902")
    declared.file_meta.TransferSyntaxUID = RLELossless
    declared.Rows = declared.Columns = 65535
    declared.NumberOfFrames = 1000
    declared.PixelData = encapsulate([b"\x00" * 64])
    declared["PixelData"].VR = "OB"
    write(declared, inputs / "declared.dcm")
    write(make_ct(sop_uid="1.2.826.0.1.3680043.8.498.1903"), inputs / "fine.dcm")

    config = RunConfig("basic", (), KEY, header_only=True, max_object_size=16 * 1024**2)
    summary = run(config, inputs, tmp_path / "out", jobs=1)
    assert summary.counts == {"written": 1, "quarantined": 2, "skipped": 0}
    reasons = _reasons(tmp_path / "out.audit")
    assert reasons["bomb.dcm"] == "decompression bomb: the deflated data set inflates to more than 16 MiB"
    assert reasons["declared.dcm"] == "decompression bomb: the pixel data declares 7999.8 GiB, more than 16 MiB"


def test_a_deflated_file_within_the_bound_is_written(tmp_path: Path):
    ds = make_ct()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    write(ds, tmp_path / "in" / "deflated.dcm")
    summary = run(RunConfig("basic", (), KEY, header_only=True), tmp_path / "in", tmp_path / "out", jobs=1)
    assert summary.counts["written"] == 1


def test_max_object_size_is_a_size(tmp_path: Path, key_file: Path):
    make_inputs(tmp_path / "in", patients=1, slices=1)
    result = CliRunner().invoke(
        main, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "--key-file", str(key_file),
               "--max-object-size", "lots"]
    )
    assert result.exit_code == 2 and "not a size" in result.output


def test_a_damaged_dicm_prefix_is_quarantined_not_skipped(tmp_path: Path):
    inputs = tmp_path / "in"
    make_inputs(inputs, patients=1, slices=2)
    damaged = inputs / "DOE_JOHN0_MRN445560" / "IM0001.dcm"
    data = bytearray(damaged.read_bytes())
    data[129] = ord("X")  # DICM -> DXCM
    damaged.write_bytes(bytes(data))
    summary = run(CONFIG, inputs, tmp_path / "out", jobs=1)
    assert summary.counts == {"written": 1, "quarantined": 1, "skipped": 1}  # README.txt is not DICOM
    assert _reasons(tmp_path / "out.audit")["DOE_JOHN0_MRN445560/IM0001.dcm"].startswith("damaged DICOM prefix")


def test_an_element_with_a_damaged_value_representation_is_quarantined(tmp_path: Path):
    path = write(make_ct(), tmp_path / "in" / "vr.dcm")
    data = path.read_bytes()
    modality = data.index(b"\x08\x00\x60\x00CS")  # (0008,0060) Modality, explicit VR
    path.write_bytes(data[: modality + 4] + b"C[" + data[modality + 6 :])
    summary = run(CONFIG, tmp_path / "in", tmp_path / "out", jobs=1)
    assert summary.counts == {"written": 0, "quarantined": 1, "skipped": 0}
    assert _reasons(tmp_path / "out.audit")["vr.dcm"] == (
        "damaged element (0008,0060): its value representation is not one of DICOM's"
    )


def test_a_kept_value_that_swallows_the_next_element_is_quarantined_not_copied(tmp_path: Path):
    path = write(make_ct(), tmp_path / "in" / "long.dcm")
    data = path.read_bytes()
    thickness = data.index(b"\x18\x00\x50\x00DS\x04\x001.0 ")  # Slice Thickness, kept by the profile
    assert data[thickness + 12 : thickness + 30] == b"\x18\x00\x00\x10LO\x0a\x00SN-778899 "  # the serial after it
    damaged = data[: thickness + 6] + (4 + 8 + 10).to_bytes(2, "little") + data[thickness + 8 :]
    path.write_bytes(damaged)  # its length now takes in the serial number
    summary = run(CONFIG, tmp_path / "in", tmp_path / "out", jobs=1)
    assert summary.counts == {"written": 0, "quarantined": 1, "skipped": 0}
    assert _reasons(tmp_path / "out.audit")["long.dcm"] == "damaged element (0018,0050): its value is not a valid DS"
