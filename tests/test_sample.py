"""The shipped sample: reproducible from its generator, and de-identified without a leak."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KEY, REPO
from deid.pipeline import RunConfig, run
from deid.verify import verify
from test_pipeline import tree_digest

SAMPLE = REPO / "benchmarks" / "sample"


def test_sample_is_what_the_generator_makes(tmp_path: Path):
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "make_corpus.py"), "--out", str(tmp_path / "s"),
         "--scale", "sample", "--seed", "1"],
        check=True,
    )
    assert tree_digest(tmp_path / "s") == tree_digest(SAMPLE)


@pytest.mark.ocr
def test_sample_run_leaks_nothing(tmp_path: Path):
    summary = run(RunConfig("research", ("clean_structured_content",), KEY), SAMPLE, tmp_path / "out", jobs=2)
    assert summary.counts == {"written": 36, "quarantined": 1, "skipped": 3}  # the truncated file
    report = verify(tmp_path / "out", SAMPLE)
    assert report.exit_code == 0 and report.retained == [], list(report.lines())
    phi = json.loads((SAMPLE / "phi.json").read_text())
    released = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())
    for values in phi.values():
        for value in values:
            assert value.encode() not in released
