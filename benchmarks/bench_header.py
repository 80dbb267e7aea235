"""Time header-only de-identification against pydicom's bare read+write and the Python peers.

Usage::

    python benchmarks/bench_header.py --corpus DIR [--runs 3] [--peers dicognito,deid,dicom-anonymizer]
        [--profile research] [--baseline SRC ...] [--record benchmarks/RESULTS.md]

Every tool runs as one process on one core over the same corpus (make it with make_corpus.py),
writing to tmpfs so the figures measure the tools, not the disk; one more row runs deid with its
default worker count (every core), as a steward would. Rows alternate with the floor
(A B A B ...) and each ratio is taken pair by pair, so drift in machine speed cancels out.
``--baseline SRC`` (repeatable) adds a row for another source tree of deid (an earlier commit, e.g.
from ``git archive``) run by the same interpreter, paired with the floor like the others, to compare
a change before and after side by side. Each peer lives in its own virtual environment under
~/.cache/deid-bench (pydicom/deid installs an import package ``deid`` of its own). Peak memory is
the child's maximum resident set size. The last column counts the DICOM files each tool wrote, so a
tool that stops at the first input it cannot handle shows as such instead of as fast.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import record

CACHE = Path.home() / ".cache" / "deid-bench"
#: One folder per benchmark process: two benchmarks at once must not write into each other's output.
SCRATCH = (Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")) / f"deid-bench-{os.getpid()}"

FLOOR = """
import sys
from pathlib import Path
from pydicom import dcmread
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for path in sorted(p for p in src.rglob("*") if p.is_file()):
    try:
        ds = dcmread(path)
    except Exception:
        continue
    out = dst / path.relative_to(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out)
"""

#: Per peer: pip requirement and a driver that de-identifies IN into OUT with its defaults.
PEERS = {
    # dicognito's own command line aborts the whole run at the first object it cannot handle
    # (one without a SOP Instance UID): drive its Anonymizer as that command does, file by file.
    "dicognito": ("dicognito", """
import sys
from pathlib import Path
import pydicom
from dicognito.anonymizer import Anonymizer
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
anonymizer = Anonymizer()
for path in sorted(p for p in src.rglob("*") if p.is_file()):
    try:
        with pydicom.dcmread(path) as ds:
            anonymizer.anonymize(ds)
            ds.save_as(dst / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    except Exception:
        pass
"""),
    "dicom-anonymizer": ("dicom-anonymizer", """
import sys
from pathlib import Path
from dicomanonymizer import anonymize_dicom_file
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for path in sorted(p for p in src.rglob("*") if p.is_file()):
    out = dst / path.relative_to(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        anonymize_dicom_file(str(path), str(out), {}, True)
    except Exception:
        pass
"""),
    "deid": ("deid", """
import sys
from pathlib import Path
from deid.config import DeidRecipe
from deid.dicom import replace_identifiers
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
recipe = DeidRecipe()
for path in sorted(p for p in src.rglob("*") if p.is_file()):
    out = dst / path.relative_to(src).parent
    out.mkdir(parents=True, exist_ok=True)
    try:
        replace_identifiers([str(path)], deid=recipe, save=True, output_folder=str(out), overwrite=True)
    except Exception:
        pass
"""),
}


@dataclass
class Timing:
    wall: float
    cpu: float
    peak_mb: float
    written: int = 0


#: Runs a command and reports its own children's CPU time and peak RSS (KiB) on stderr.
_MEASURE = (
    "import resource, subprocess, sys; "
    "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
    "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(u.ru_utime + u.ru_stime, u.ru_maxrss, file=sys.stderr)"
)


def timed(command: list[str], env: dict[str, str] | None = None) -> Timing:
    """Run ``command``; return its wall seconds, CPU seconds and peak RSS."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURE, *command], env=env, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    cpu, peak_kib = done.stderr.split()[-2:]
    written = sum(1 for _ in (SCRATCH / "out").rglob("*.dcm"))  # a tool that stops early shows here
    return Timing(wall, float(cpu), int(peak_kib) / 1024, written)


def peer_python(name: str, requirement: str) -> Path | None:
    """The interpreter of the peer's own venv, created on first use; None if it cannot install."""
    venv = CACHE / "venvs" / name
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        installed = subprocess.run([str(python), "-m", "pip", "install", "-q", requirement], check=False)
        if installed.returncode:
            shutil.rmtree(venv)
            return None
    return python


def script(name: str, text: str) -> Path:
    path = CACHE / "drivers" / name / "run.py"  # a folder each: no driver shadows a package
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(path.with_name(path.name + ".audit"), ignore_errors=True)
    return path


def commands(
    corpus: Path, peers: list[str], key: Path, profile: str, baselines: list[Path]
) -> dict[str, list[str]]:
    deid = shutil.which("deid")
    rows = {}
    if deid:
        base = [deid, "run", str(corpus), str(SCRATCH / "out"), "--header-only", "--key-file", str(key),
                "--profile", profile]
        rows["deid run --header-only -j 1"] = [*base, "-j", "1"]
        for baseline in baselines:
            rows[f"deid run --header-only -j 1 (tree {baseline.name})"] = [
                "env", f"PYTHONPATH={baseline}", sys.executable, "-m", "deid.cli", *base[1:], "-j", "1"]
        # The peers have no parallel mode; deid's default uses every core.
        rows[f"deid run --header-only (default: {os.cpu_count()} workers)"] = base
    for name in peers:
        requirement, driver = PEERS[name]
        python = peer_python(name, requirement)
        if python is None:
            print(f"{name}: could not be installed; left out", file=sys.stderr)
            continue
        rows[name] = [str(python), str(script(name, driver)), str(corpus), str(SCRATCH / "out")]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peers", default="dicognito,deid,dicom-anonymizer")
    parser.add_argument("--profile", default="basic")
    parser.add_argument("--baseline", type=Path, action="append", default=[],
                        help="another deid source tree, timed side by side (repeatable)")
    parser.add_argument("--record", type=Path)
    args = parser.parse_args()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    atexit.register(shutil.rmtree, SCRATCH, True)
    key = SCRATCH / "key"
    key.write_text("benchmark-key-0123456789abcdef\n")
    files = sum(1 for p in args.corpus.rglob("*") if p.is_file())
    size_mb = sum(p.stat().st_size for p in args.corpus.rglob("*") if p.is_file()) / 2**20
    floor_cmd = [sys.executable, str(script("floor", FLOOR)), str(args.corpus), str(SCRATCH / "out")]
    rows = commands(args.corpus, [p for p in args.peers.split(",") if p], key, args.profile, args.baseline)
    env = {**os.environ, "DEID_KEY_FILE": str(key)}
    results: dict[str, list[tuple[Timing, Timing]]] = {name: [] for name in rows}
    floors: list[Timing] = []
    fresh(SCRATCH / "out")
    timed(floor_cmd)  # warm-up: the corpus into the page cache
    for _ in range(args.runs):
        for name, command in rows.items():
            fresh(SCRATCH / "out")
            floor = timed(floor_cmd)
            floors.append(floor)
            fresh(SCRATCH / "out")
            results[name].append((timed(command, env), floor))
    table = [
        f"corpus: {args.corpus} ({files} files, {size_mb:.0f} MB); profile {args.profile}; {args.runs} paired runs; "
        "medians",
        "",
        "| tool | wall s | CPU s | files/s | ratio to floor (paired) | peak RSS MB | DICOM files written |",
        "|---|---|---|---|---|---|---|",
    ]
    floor_wall = statistics.median(t.wall for t in floors)
    table.append(
        f"| pydicom read+write (floor) | {floor_wall:.2f} | {statistics.median(t.cpu for t in floors):.2f} "
        f"| {files / floor_wall:.0f} | 1.00 | {max(t.peak_mb for t in floors):.0f} | {min(t.written for t in floors)} |"
    )
    for name, pairs in results.items():
        wall = statistics.median(t.wall for t, _ in pairs)
        ratio = statistics.median(t.wall / f.wall for t, f in pairs)
        table.append(
            f"| {name} | {wall:.2f} | {statistics.median(t.cpu for t, _ in pairs):.2f} | {files / wall:.0f} "
            f"| {ratio:.2f} | {max(t.peak_mb for t, _ in pairs):.0f} | {min(t.written for t, _ in pairs)} |"
        )
    text = "\n".join(table)
    print(text)
    if args.record:
        record.append(args.record, "Header-only throughput", text)


if __name__ == "__main__":
    main()
