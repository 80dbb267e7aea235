"""The command line: profiles listing, key creation, logs without PHI."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from conftest import make_ct, write
from deid.cli import main
from deid.keys import load_key
from test_pipeline import make_inputs


def test_profiles_list_and_show():
    runner = CliRunner()
    listed = runner.invoke(main, ["profiles", "list"])
    assert listed.exit_code == 0
    assert "research: retain_safe_private, retain_patient_characteristics" in listed.output
    shown = runner.invoke(main, ["profiles", "show", "research"])
    assert shown.exit_code == 0
    lines = shown.output.splitlines()
    study_date = next(line for line in lines if line.startswith("(0008,0020)"))
    assert study_date.split()[1] == "C" and "retain_long_modified_dates" in study_date
    patient_name = next(line for line in lines if line.startswith("(0010,0010)"))
    assert patient_name.split()[1] == "Z" and "basic" in patient_name
    assert "113107 Retain Longitudinal Temporal Information Modified Dates Option" in shown.output
    bad = runner.invoke(main, ["profiles", "show", "basic", "-o", "retain_everything"])
    assert bad.exit_code == 2 and "unknown option" in bad.output


def test_default_key_is_created_once_private(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("DEID_KEY_FILE", raising=False)
    first = load_key(None)
    path = tmp_path / "config" / "deid" / "key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(None) == first and len(first) >= 32


def test_json_logs_carry_no_phi(tmp_path: Path, key_file: Path):
    make_inputs(tmp_path / "in")
    bad = tmp_path / "in" / "DOE_JOHN0_MRN445560" / "IM0001.dcm"
    bad.write_bytes(bad.read_bytes()[:700])
    odd = make_ct(patient_id="MRN445569", sop_uid="1.2.826.0.1.3680043.8.498.19999")
    odd.StudyInstanceUID = "1.2.3.DOE.MRN445569"  # pydicom's warning on it would quote it
    write(odd, tmp_path / "in" / "odd.dcm")
    result = subprocess.run(
        [sys.executable, "-m", "deid.cli", "run", str(tmp_path / "in"), str(tmp_path / "out"),
         "--key-file", str(key_file), "-j", "1"],
        capture_output=True, text=True, env={**os.environ},
    )
    assert result.returncode == 1
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    files = [e for e in events if e["event"] == "file"]
    assert len(files) == 13  # one per DICOM file
    quarantined = [e for e in files if e["status"] == "quarantined"]
    assert len(quarantined) == 1 and quarantined[0]["reason"] == "truncated file"
    assert "DOE" not in result.stderr and "MRN" not in result.stderr
    assert all(line.startswith("{") for line in result.stderr.splitlines()[:-1])  # then the summary line
    assert events[-1]["event"] == "run finished" and events[-1]["quarantined"] == 1


def test_dry_run_describes_the_stages_and_writes_nothing(tmp_path: Path, key_file: Path):
    make_inputs(tmp_path / "in")
    result = CliRunner().invoke(
        main, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "--key-file", str(key_file), "--dry-run"]
    )
    assert result.exit_code == 0
    assert "1. gate:" in result.output and "2. header:" in result.output and "3. text:" in result.output
    assert "13 file(s)" in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.audit").exists()


def test_console_logs_name_the_quarantined_file(tmp_path: Path, key_file: Path):
    make_inputs(tmp_path / "in")
    bad = tmp_path / "in" / "DOE_JOHN0_MRN445560" / "IM0001.dcm"
    bad.write_bytes(bad.read_bytes()[:700])
    result = subprocess.run(
        [sys.executable, "-m", "deid.cli", "run", str(tmp_path / "in"), str(tmp_path / "out"),
         "--key-file", str(key_file), "-j", "1", "--console-logs"],
        capture_output=True, text=True,
    )
    lines = [line for line in result.stderr.splitlines() if "quarantined" in line and "truncated" in line]
    assert len(lines) == 1 and "DOE_JOHN0_MRN445560/IM0001.dcm" in lines[0]
