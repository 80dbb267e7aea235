"""What a person sees of `deid run` at a terminal: run under a pseudo-terminal (`script`), as a
steward would run it."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import structlog

from deid import logs
from test_pipeline import make_inputs

DEID = [sys.executable, "-m", "deid.cli"]


def at_a_terminal(command: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> tuple[str, int]:
    """Run ``command`` under a 120x40 pseudo-terminal; return everything it wrote and its exit code."""
    if shutil.which("script") is None:
        pytest.skip("script (util-linux) is not installed: no pseudo-terminal to run under")
    log = tmp_path / "typescript"
    line = f"stty cols 120 rows 40; {shlex.join(command)}"
    result = subprocess.run(
        ["script", "-qec", line, str(log)], capture_output=True, text=True, timeout=300,
        env={**os.environ, "TERM": "xterm", **(env or {})},
    )
    return log.read_text(errors="replace"), result.returncode


def visible(stream: str) -> list[str]:
    """The lines left on the screen: each line as its last carriage return left it, blank ones
    (a progress bar cleared) dropped, and the ``script`` banner lines."""
    lines = (segment.rsplit("\r", 1)[-1] if segment.rstrip("\r") else "" for segment in stream.split("\n"))
    return [line for line in lines if line.strip() and not line.startswith("Script ")]


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    make_inputs(tmp_path / "in")
    bad = tmp_path / "in" / "DOE_JOHN0_MRN445560" / "IM0001.dcm"
    bad.write_bytes(bad.read_bytes()[:700])
    return tmp_path / "in"


def deid_run(inputs: Path, key_file: Path, *extra: str) -> list[str]:
    out = inputs.parent / "out"
    return [*DEID, "run", str(inputs), str(out), "--key-file", str(key_file), "-j", "1", "--header-only", *extra]


@pytest.mark.slow
def test_a_person_sees_a_bar_the_files_not_written_and_a_summary(inputs: Path, key_file: Path, tmp_path: Path):
    stream, code = at_a_terminal(deid_run(inputs, key_file), tmp_path, {"NO_COLOR": "1"})
    assert code == 1  # a new quarantine
    assert "file/s" in stream  # the progress bar was drawn
    assert "\x1b[" not in stream  # NO_COLOR: no colour, and the bar uses none
    screen = visible(stream)
    assert not any(".dcm" in line and "quarantined" not in line for line in screen)  # no line per written file
    quarantined = [line for line in screen if line.startswith("20") and "quarantined" in line]
    assert len(quarantined) == 1 and "DOE_JOHN0_MRN445560/IM0001.dcm: truncated file" in quarantined[0]
    summary = [line.strip() for line in screen[[line[:6] for line in screen].index("deid: "):]]
    assert summary[0].startswith("deid: 11 written, 1 quarantined, 1 skipped of 13 input(s)")
    assert "this run: 13 processed (11 written, 1 quarantined, 1 skipped), 0 done before; 1 new" in summary[1]
    audit = inputs.parent / "out.audit"
    assert f"audit:    {audit} (private; reasons in quarantine.csv)" in summary
    assert f"review:   {audit / 'review' / 'index.html'} (private: shows PHI)" in summary
    fingerprint = json.loads((audit / "summary.json").read_text())["key_fingerprint"]
    assert f"key:      {key_file} (fingerprint {fingerprint})" in summary
    assert key_file.read_text().strip() not in stream
    assert not any("warn" in line.lower() for line in screen if "quarantined" not in line)

    again, code = at_a_terminal(deid_run(inputs, key_file), tmp_path)
    assert code == 0 and "file/s" not in again  # nothing to do: no bar, the old quarantine is not new
    assert "this run: 0 processed (0 written, 0 quarantined, 0 skipped), 13 done before; 0 new" in again


def test_colour_unless_no_color(inputs: Path, key_file: Path, tmp_path: Path):
    stream, _ = at_a_terminal(deid_run(inputs, key_file), tmp_path, {"NO_COLOR": ""})  # empty: colour stays
    assert "\x1b[" in stream


@pytest.mark.slow
def test_verbose_tells_every_file_and_quiet_only_what_went_wrong(inputs: Path, key_file: Path, tmp_path: Path):
    stream, _ = at_a_terminal(deid_run(inputs, key_file, "-v"), tmp_path)
    written = [line for line in visible(stream) if "written" in line and "->" in line]
    assert len(written) == 11
    shutil.rmtree(inputs.parent / "out")
    shutil.rmtree(inputs.parent / "out.audit")
    stream, code = at_a_terminal(deid_run(inputs, key_file, "--quiet"), tmp_path)
    assert code == 1 and "file/s" not in stream and "deid: " not in stream
    assert [line for line in visible(stream)] == [
        line for line in visible(stream) if "quarantined DOE_JOHN0_MRN445560/IM0001.dcm: truncated file" in line
    ] and len(visible(stream)) == 1


def test_library_warnings_stay_off_the_screen(capsys):
    try:
        logs.configure(json=False)
        warnings.warn("A worker stopped while some jobs were given to the executor", UserWarning, stacklevel=1)
        assert capsys.readouterr().err == ""
        logs.configure(json=False, verbose=True)
        warnings.warn("A worker stopped while some jobs were given to the executor", UserWarning, stacklevel=1)
        assert "library warning" in capsys.readouterr().err
    finally:
        structlog.reset_defaults()
