"""The release's identity: a run with another key, profile, options or pixels is refused;
``--rebuild`` replaces the release whole, and a killed rebuild leaves the old one intact."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import KEY
from deid.cli import EXIT_CONFIG, main
from deid.pipeline import RunConfig, run
from deid.pseudonyms import Pseudonymizer
from deid.release import MARKER_NAME, ReleaseMismatch, aside, read_marker, recover, swap_in
from test_pipeline import make_inputs, tree_digest

OTHER_KEY = b"fedcba9876543210fedcba9876543210"


def patient_folders(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def crosswalk(audit: Path) -> dict[str, str]:
    return {r["id_old"]: r["id_new"] for r in csv.DictReader((audit / "crosswalk_patient_ids.csv").open())}


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    make_inputs(tmp_path / "in")
    return tmp_path / "in"


def test_a_run_with_another_key_is_refused_and_changes_nothing(inputs: Path, tmp_path: Path):
    out = tmp_path / "out"
    run(RunConfig("basic", (), KEY), inputs, out, jobs=1)
    assert len(patient_folders(out)) == 3
    before, audit_before = tree_digest(out), tree_digest(tmp_path / "out.audit")
    with pytest.raises(ReleaseMismatch) as refused:
        run(RunConfig("basic", (), OTHER_KEY), inputs, out, jobs=1)  # a cron job that lost --key-file
    message = str(refused.value)
    assert Pseudonymizer(KEY).fingerprint() in message and Pseudonymizer(OTHER_KEY).fingerprint() in message
    assert "--rebuild" in message and "another output folder" in message and "\n" not in message
    assert len(patient_folders(out)) == 3  # not 6 folders for 3 patients
    assert tree_digest(out) == before
    assert crosswalk(tmp_path / "out.audit") == crosswalk_of(audit_before, tmp_path / "out.audit")


def crosswalk_of(digest: dict[str, str], audit: Path) -> dict[str, str]:
    assert digest["crosswalk_patient_ids.csv"]  # unchanged file, read as it is now
    return crosswalk(audit)


@pytest.mark.parametrize(
    ("changed", "difference"),
    [
        (RunConfig("research", (), KEY, pixels="none"), "profile basic (this run: research)"),
        (RunConfig("basic", ("retain_uids",), KEY, pixels="none"), "options none (this run: retain_uids)"),
        (RunConfig("basic", (), KEY, header_only=True), "pixels text per modality (this run: off)"),
        (RunConfig("basic", (), KEY, pixels="dp-pix"), "pixels whole_image none (this run: dp-pix)"),
    ],
)
def test_a_run_with_another_profile_options_or_pixels_is_refused(
    inputs: Path, tmp_path: Path, changed: RunConfig, difference: str
):
    run(RunConfig("basic", (), KEY, pixels="none"), inputs, tmp_path / "out", jobs=1)
    with pytest.raises(ReleaseMismatch, match="made with") as refused:
        run(changed, inputs, tmp_path / "out", jobs=1)
    assert difference in str(refused.value)


def test_the_cli_says_what_differs_in_one_line_and_exits_3(inputs: Path, tmp_path: Path, key_file: Path):
    other = tmp_path / "other.key"
    other.write_text(OTHER_KEY.decode())
    other.chmod(0o600)
    command = ["run", str(inputs), str(tmp_path / "out"), "-j", "1", "--json-logs", "--pixels", "none"]
    assert CliRunner().invoke(main, [*command, "--key-file", str(key_file)]).exit_code == 0
    refused = CliRunner().invoke(main, [*command, "--key-file", str(other)])
    assert refused.exit_code == EXIT_CONFIG
    events = [json.loads(line) for line in refused.output.splitlines() if line.startswith("{")]
    assert len(refused.output.strip().splitlines()) == 1 and events[0]["level"] == "error"
    assert "key fingerprint" in events[0]["reason"] and "--rebuild" in events[0]["reason"]


def test_rebuild_replaces_the_whole_release(inputs: Path, tmp_path: Path):
    out, audit = tmp_path / "out", tmp_path / "out.audit"
    cut = inputs / "DOE_JOHN1_MRN445561" / "IM0002.dcm"
    cut.write_bytes(cut.read_bytes()[:600])
    run(RunConfig("basic", (), KEY), inputs, out, jobs=1)
    old_folders = patient_folders(out)
    summary = run(RunConfig("basic", (), OTHER_KEY), inputs, out, jobs=1, rebuild=True)
    assert summary.counts == {"written": 11, "quarantined": 1, "skipped": 1}
    assert summary.new_quarantined == 0 and summary.exit_code == 0  # the old release quarantined it already
    new_folders = patient_folders(out)
    assert len(new_folders) == 3 and not set(new_folders) & set(old_folders)
    assert sorted(crosswalk(audit).values()) == new_folders  # no stale mapping left
    manifest = list(csv.DictReader((out / "manifest.csv").open()))
    assert len(manifest) == 11 and {r["path"].split("/")[0] for r in manifest} == set(new_folders)
    fingerprint = Pseudonymizer(OTHER_KEY).fingerprint()
    assert read_marker(out)["key_fingerprint"] == fingerprint
    assert json.loads((audit / "summary.json").read_text())["key_fingerprint"] == fingerprint
    assert fingerprint in (out / "DEIDENTIFICATION.md").read_text()
    assert not aside(out).exists() and not aside(audit).exists()
    again = run(RunConfig("basic", (), OTHER_KEY), inputs, out, jobs=1)  # the nightly run goes on
    assert again.processed == 0


@pytest.mark.slow
def test_a_killed_rebuild_leaves_the_old_release_intact(tmp_path: Path, key_file: Path):
    inputs = tmp_path / "in"
    make_inputs(inputs, patients=6, slices=25)
    other = tmp_path / "other.key"
    other.write_text(OTHER_KEY.decode())
    other.chmod(0o600)
    command = [sys.executable, "-m", "deid.cli", "run", str(inputs), str(tmp_path / "out"), "-j", "1",
               "--pixels", "none"]
    assert subprocess.run([*command, "--key-file", str(key_file)], check=False).returncode == 0
    release, audit = tree_digest(tmp_path / "out"), tree_digest(tmp_path / "out.audit")
    victim = subprocess.Popen([*command, "--key-file", str(other), "--rebuild"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(aside(tmp_path / "out").rglob("*.dcm"))) < 20:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert 0 < len(list(aside(tmp_path / "out").rglob("*.dcm"))) < 150, "killed in the middle"
    assert tree_digest(tmp_path / "out") == release
    assert {k: v for k, v in tree_digest(tmp_path / "out.audit").items() if k != ".deid.lock"} == {
        k: v for k, v in audit.items() if k != ".deid.lock"
    }
    old = subprocess.run([*command, "--key-file", str(key_file)], check=False)  # the old key still works
    assert old.returncode == 0 and tree_digest(tmp_path / "out") == release
    assert not aside(tmp_path / "out").exists()  # what the killed rebuild left is cleared


def test_a_swap_killed_half_way_is_finished_by_the_next_run(inputs: Path, tmp_path: Path):
    out, audit = tmp_path / "out", tmp_path / "out.audit"
    run(RunConfig("basic", (), KEY), inputs, out, jobs=1)
    run(RunConfig("basic", (), OTHER_KEY), inputs, aside(out), aside(audit), jobs=1)
    from deid.release import _exchange

    _exchange(aside(audit), audit)  # the audit folder swapped, then the process died
    recover(out, audit)
    assert read_marker(out)["key_fingerprint"] == Pseudonymizer(OTHER_KEY).fingerprint()
    assert sorted(crosswalk(audit).values()) == patient_folders(out)
    assert not aside(out).exists() and not aside(audit).exists()
    swap_in(out, audit)  # nothing left to swap: a no-op
    assert read_marker(out)["key_fingerprint"] == Pseudonymizer(OTHER_KEY).fingerprint()


def test_the_marker_is_in_place_before_the_first_output(inputs: Path, tmp_path: Path):
    out = tmp_path / "out"
    run(RunConfig("basic", (), KEY), inputs, out, jobs=1)
    marker = json.loads((out / MARKER_NAME).read_text())
    assert marker["tool"] == "deid" and marker["profile"] == "basic" and marker["options"] == []
    assert marker["key_fingerprint"] == Pseudonymizer(KEY).fingerprint()
    assert KEY.decode() not in (out / MARKER_NAME).read_text()
    assert os.path.getmtime(out / MARKER_NAME) <= min(os.path.getmtime(p) for p in out.rglob("*.dcm"))
