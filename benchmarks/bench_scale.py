"""Scale-out and cron figures: files/s for 1 and 2 local workers and a 2-worker Dask LocalCluster,
peak memory per worker at two corpus sizes, and the cost of an incremental re-run. Each round also
times two CPU-bound processes side by side against one, the most two workers can gain on this machine;
with a 4x corpus, the three runs once more there (one round).

Usage::

    python benchmarks/bench_scale.py --corpus DIR [--corpus4 DIR4] [--runs 3] [--record benchmarks/RESULTS.md]

All runs are header-only, output on tmpfs. Memory is the peak RSS of the run's processes
(the driver and, for local workers, the largest worker).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import record

SCRATCH = Path("/dev/shm/deid-scale") if Path("/dev/shm").is_dir() else Path("/tmp/deid-scale")
#: Runs the command and reports its wall seconds, from start until every process it started has
#: ended, and the peak RSS of the largest of them. This process is a child subreaper (Linux) and
#: waits for every descendant, so the local workers, whose forkserver parent outlives the driver by
#: a moment, are counted with the rest.
_MEASURE = """
import ctypes, os, resource, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
start = time.perf_counter()
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
wall = time.perf_counter() - start
print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
"""


#: The three full runs of each round, and of the 4x corpus.
FULL_RUNS = {"one": ("-j", "1"), "two": ("-j", "2"), "dask": ("--scheduler", "local:2")}


def count_files(root: Path) -> int:
    """Files under ``root``, DICOM or not: every input a run accounts for."""
    return sum(1 for p in root.rglob("*") if p.is_file())


def deid_run(corpus: Path, out: Path, *extra: str, clean: bool = True) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB, largest single process) of one ``deid run``."""
    if clean:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(out.with_name(out.name + ".audit"), ignore_errors=True)
    command = [shutil.which("deid") or "deid", "run", str(corpus), str(out), "--header-only", *extra]
    done = subprocess.run([sys.executable, "-c", _MEASURE, *command], stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "DEID_KEY_FILE": str(SCRATCH / "key")})
    wall, peak = done.stderr.split()[-2:]
    return float(wall), int(peak) / 1024


#: A CPU-bound loop of about a second, for :func:`parallel_ceiling`.
_SPIN = "x = 0\nfor i in range(15_000_000):\n    x += i"


def parallel_ceiling() -> float:
    """How much faster two CPU-bound processes run side by side than one after the other here: the
    most two workers can gain on this machine (2.0 on two free cores, less where the VM's two cores
    share a physical one or its host is busy)."""
    spin = [sys.executable, "-c", _SPIN]
    start = time.perf_counter()
    subprocess.run(spin, check=True)
    alone = time.perf_counter() - start
    start = time.perf_counter()
    pair = [subprocess.Popen(spin) for _ in range(2)]
    for process in pair:
        process.wait()
    return 2 * alone / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--corpus4", type=Path, help="a corpus four times the size, for memory")
    parser.add_argument("--runs", type=int, default=3, help="rounds of the four runs; medians are reported")
    parser.add_argument("--record", type=Path)
    args = parser.parse_args()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    (SCRATCH / "key").write_text("benchmark-key-0123456789abcdef\n")
    files = count_files(args.corpus)
    out = SCRATCH / "out"
    deid_run(args.corpus, out, "-j", "1")  # warm-up
    walls: dict[str, list[float]] = {"one": [], "two": [], "dask": [], "again": []}
    ceilings: list[float] = []
    peaks: dict[str, float] = {}
    for _ in range(args.runs):  # rounds of all four, so drift in machine speed hits each alike
        for name, extra in FULL_RUNS.items():
            wall, peak = deid_run(args.corpus, out, *extra)
            walls[name].append(wall)
            peaks[name] = max(peaks.get(name, 0.0), peak)
        walls["again"].append(deid_run(args.corpus, out, "-j", "2", clean=False)[0])
        ceilings.append(parallel_ceiling())
    one, two, dask, again = (statistics.median(walls[k]) for k in ("one", "two", "dask", "again"))
    ceiling = statistics.median(ceilings)
    peak1, peak2 = peaks["one"], peaks["two"]
    rows = [
        f"| 1 local worker | {one:.2f} | {files / one:.0f} | 1.00 |",
        f"| 2 local workers (loky, forkserver) | {two:.2f} | {files / two:.0f} | {one / two:.2f} |",
        f"| Dask LocalCluster, 2 workers | {dask:.2f} | {files / dask:.0f} | {one / dask:.2f} "
        f"(Dask overhead against local workers: {dask / two - 1:.1%}) |",
        f"| incremental re-run, nothing changed | {again:.2f} | - | {again / two:.1%} of a full 2-worker run |",
        f"| two CPU-bound processes against one (this machine's ceiling) | - | - | {ceiling:.2f} |",
    ]
    text = [f"corpus: {args.corpus} ({files} files); header-only; median wall seconds of {args.runs} rounds", "",
            "| run | wall s | files/s | speed-up |", "|---|---|---|---|", *rows, "",
            "rounds, wall s: " + "; ".join(f"{k} " + " ".join(f"{w:.2f}" for w in v) for k, v in walls.items())
            + "; two CPU-bound processes against one " + " ".join(f"{c:.2f}" for c in ceilings),
            f"peak RSS of the largest process: 1 worker {peak1:.0f} MB, 2 workers {peak2:.0f} MB"]
    if args.corpus4:
        files4 = count_files(args.corpus4)
        (one4, peak4), (two4, peak4_two), (dask4, _) = (
            deid_run(args.corpus4, out, *extra) for extra in FULL_RUNS.values()
        )
        text += [f"{files4} files, one round: 1 worker {one4:.2f} s, 2 workers {two4:.2f} s ({one4 / two4:.2f}x), "
                 f"Dask {dask4:.2f} s (overhead against local workers {dask4 / two4 - 1:.1%})",
                 f"memory as the corpus grows, peak RSS of the largest process, 1 worker / 2 workers: "
                 f"{files} files {peak1:.0f} / {peak2:.0f} MB, {files4} files {peak4:.0f} / {peak4_two:.0f} MB"]
    print("\n".join(text))
    if args.record:
        record.append(args.record, "Scale-out and incremental runs", "\n".join(text))


if __name__ == "__main__":
    main()
