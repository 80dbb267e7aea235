"""Hostile inputs: a few hundred files mutated from the shared corpus (fixed seed) go through
``deid run`` and ``deid verify`` without a traceback, each ending written, quarantined or skipped,
and the release verifies clean."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.corpus

#: How many mutated inputs, and the seed that makes them.
MUTANTS = 300
SEED = 19
#: Corpus files at most this large are mutated (the run stays within about a minute).
LARGEST = 200_000
#: Explicit VRs, whose two letters a mutation may replace.
_VRS = [vr.encode() for vr in (
    "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV"
).split()]


def _bases(shared: Path) -> list[Path]:
    with (shared / "corpus" / "manifest.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["kind"] == "DICOM" and int(r["size"]) <= LARGEST]
    return [shared / "corpus" / r["path"] for r in sorted(rows, key=lambda r: r["path"])]


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One mutation of ``data``: its name and the mutated bytes."""
    body = bytearray(data)
    kind = rng.choice(["flip", "truncate", "length", "vr", "insert", "magic", "repeat", "zero"])
    start = min(132, len(body) - 1)
    if kind == "flip":
        for _ in range(rng.randint(1, 16)):
            body[rng.randrange(start, len(body))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del body[rng.randrange(start, len(body)) :]
    elif kind == "length":  # a huge or odd value length where an element header may be
        at = rng.randrange(start, max(start + 1, len(body) - 4))
        body[at : at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\xfe\xff\xff\x7f", b"\x01\x00\x00\x00"])
    elif kind == "vr":  # a known VR replaced by another, or by garbage
        spots = [i for i in range(start, min(len(body) - 1, 20_000)) if bytes(body[i : i + 2]) in _VRS]
        for at in rng.sample(spots, min(len(spots), rng.randint(1, 4))):
            body[at : at + 2] = rng.choice([rng.choice(_VRS), bytes(rng.randrange(256) for _ in range(2))])
    elif kind == "insert":
        at = rng.randrange(start, len(body))
        body[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == "magic":
        body[128 + rng.randrange(4)] ^= 0x20
    elif kind == "repeat":
        at = rng.randrange(start, len(body))
        body[at:at] = body[at : at + rng.randint(8, 4096)]
    else:
        at = rng.randrange(start, len(body))
        body[at : at + rng.randint(1, 512)] = bytes(min(len(body) - at, 512))
    return kind, bytes(body)


@pytest.fixture(scope="module")
def fuzzed(shared_corpus: Path, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """:data:`MUTANTS` mutated corpus files, and the mutation of each."""
    rng = random.Random(SEED)
    bases = _bases(shared_corpus)
    root = tmp_path_factory.mktemp("fuzz") / "in"
    root.mkdir()
    kinds = {}
    for number in range(MUTANTS):
        kind, data = mutate(rng.choice(bases).read_bytes(), rng)
        name = f"m{number:03d}.dcm"
        (root / name).write_bytes(data)
        kinds[name] = kind
    return root, kinds


@pytest.fixture(scope="module")
def shared_corpus() -> Path:
    from conftest import shared_dir

    shared = shared_dir()
    if shared is None or not (shared / "corpus" / "manifest.csv").is_file():
        pytest.skip("shared corpus not found: set DEID_SHARED to the folder holding corpus/")
    return shared


@pytest.fixture(scope="module")
def released(fuzzed, tmp_path_factory) -> dict:
    """``deid run`` and ``deid verify`` over the fuzzed inputs, once for the tests below."""
    inputs, kinds = fuzzed
    work = tmp_path_factory.mktemp("release")
    key = work / "key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    out, audit = work / "out", work / "out.audit"
    env = {**os.environ, "DEID_KEY_FILE": str(key)}
    ran = subprocess.run(
        [sys.executable, "-m", "deid.cli", "run", str(inputs), str(out), "--header-only", "-j", "2", "--json-logs"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    verified = subprocess.run(
        [sys.executable, "-m", "deid.cli", "verify", str(out), "--against", str(inputs), "--audit-dir", str(audit)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    return {"kinds": kinds, "audit": audit, "run": ran, "verify": verified}


def test_fuzzed_inputs_run_without_a_traceback_and_each_reaches_one_end(released):
    ran, audit, kinds = released["run"], released["audit"], released["kinds"]
    assert "Traceback" not in ran.stderr, ran.stderr[-3000:]
    assert ran.returncode in (0, 1), ran.stderr[-2000:]
    rows = list(csv.DictReader((audit / "files.csv").open()))
    assert sorted(r["input"] for r in rows) == sorted(kinds)  # every input accounted for, once
    unforeseen = [(r["input"], kinds[r["input"]], r["reason"]) for r in rows if "internal error" in r["reason"]]
    assert not unforeseen, "each quarantine should name its reason"
    summary = json.loads((audit / "summary.json").read_text())
    assert sum(summary["counts"].values()) == MUTANTS
    assert summary["counts"]["written"] > 0


def test_verify_reads_the_fuzzed_inputs_without_a_traceback(released):
    verified = released["verify"]
    assert "Traceback" not in verified.stdout + verified.stderr, verified.stderr[-3000:]
    assert verified.returncode in (0, 1), verified.stdout[-2000:] + verified.stderr[-2000:]


def test_the_fuzzed_release_verifies_clean(released):
    verified = released["verify"]
    assert verified.returncode == 0, verified.stdout[-3000:]
