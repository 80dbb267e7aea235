"""Fault trials of ``deid run``: the driver killed (SIGKILL) or stopped (SIGTERM) mid-run, a full
disk, and fuzzed inputs.

Usage::

    python benchmarks/bench_faults.py --corpus DIR [--kills 10] [--terms 5] [--disk] \
        [--fuzz 1000 --seed 7] [--record benchmarks/RESULTS.md]

* Kills: ``deid run --header-only -j 2`` in a session of its own is killed after a random number
  of outputs; the trial measures how long any process of the session lives on (the driver's
  workers, forkserver and resource tracker), then runs again and compares the release with a
  clean run's, byte for byte.
* Terms: the same with SIGTERM: the exit code, how long until every process is gone, and the resume.
* Disk (root only): OUT on a tmpfs a quarter of the release's size; the exit code, what the ledger
  recorded, empty folders and quarantines; then the tmpfs grows and the run is repeated.
* Fuzz: mutated copies of small files of ``$DEID_SHARED/corpus`` (tests/test_fuzz.py's mutations)
  through ``deid run --header-only`` and ``deid verify``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import record

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
# the tests' helpers: one way to find a run's processes, one set of mutations
from test_faults import _session as session
from test_fuzz import _bases, mutate

SCRATCH = Path("/tmp/deid-faults")
KEY = "0123456789abcdef0123456789abcdef\n"


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def deid(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEID_KEY_FILE": str(SCRATCH / "key")}
    return subprocess.run([sys.executable, "-m", "deid.cli", *args], env=env, capture_output=True, text=True,
                          **kwargs)


def signal_trial(corpus: Path, reference: dict[str, str], sig: signal.Signals, after: int) -> dict:
    out = SCRATCH / "out"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(SCRATCH / "out.audit", ignore_errors=True)
    env = {**os.environ, "DEID_KEY_FILE": str(SCRATCH / "key")}
    driver = subprocess.Popen([sys.executable, "-m", "deid.cli", "run", str(corpus), str(out), "--header-only",
                               "-j", "2", "--json-logs"], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while driver.poll() is None and sum(1 for _ in out.rglob("*.dcm")) < after:
        time.sleep(0.02)
    written = sum(1 for _ in out.rglob("*.dcm"))
    before = len(session(driver.pid))
    driver.send_signal(sig)
    sent = time.monotonic()
    code = driver.wait()
    left = session(driver.pid)
    while left and time.monotonic() - sent < 70:
        time.sleep(0.05)
        left = session(driver.pid)
    gone = time.monotonic() - sent
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    resumed = deid("run", str(corpus), str(out), "--header-only", "-j", "2")
    return {"written": written, "processes": before, "code": code, "left": len(left), "gone_s": gone,
            "resume_code": resumed.returncode, "identical": digest(out) == reference}


def disk_trial(corpus: Path, reference: dict[str, str], release_bytes: int) -> dict:
    mountpoint = SCRATCH / "small"
    mountpoint.mkdir(exist_ok=True)
    size_kb = max(256, release_bytes // 4 // 1024)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mountpoint)]).returncode:
        return {}
    try:
        out, audit = mountpoint / "out", SCRATCH / "disk.audit"
        shutil.rmtree(audit, ignore_errors=True)
        full = deid("run", str(corpus), str(out), "--audit-dir", str(audit), "--header-only", "-j", "2")
        with sqlite3.connect(audit / "ledger.sqlite") as db:
            statuses = Counter(status for (status,) in db.execute("SELECT status FROM files"))
        folders = [p for p in out.rglob("*") if p.is_dir()]
        trial = {"size_kb": size_kb, "code": full.returncode, "line": full.stderr.strip().splitlines()[-1],
                 "recorded": dict(statuses), "on_disk": sum(1 for _ in out.rglob("*.dcm")),
                 "empty_folders": sum(1 for p in folders if not any(p.iterdir())),
                 "traceback": "Traceback" in full.stderr}
        subprocess.run(["mount", "-o", "remount,size=1g", str(mountpoint)], check=True)
        again = deid("run", str(corpus), str(out), "--audit-dir", str(audit), "--header-only", "-j", "2")
        trial.update(rerun_code=again.returncode, identical=digest(out) == reference)
        return trial
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fuzz_trial(count: int, seed: int) -> dict:
    shared = Path(os.environ.get("DEID_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    inputs = SCRATCH / "fuzz"
    shutil.rmtree(inputs.parent / "fuzz-out", ignore_errors=True)
    shutil.rmtree(inputs.parent / "fuzz-out.audit", ignore_errors=True)
    shutil.rmtree(inputs, ignore_errors=True)
    inputs.mkdir(parents=True)
    rng, bases, kinds = random.Random(seed), _bases(shared), {}
    for number in range(count):
        kind, data = mutate(rng.choice(bases).read_bytes(), rng)
        (inputs / f"m{number:04d}.dcm").write_bytes(data)
        kinds[f"m{number:04d}.dcm"] = kind
    out = inputs.parent / "fuzz-out"
    start = time.monotonic()
    ran = deid("run", str(inputs), str(out), "--header-only", "-j", "2", "--json-logs")
    run_s = time.monotonic() - start
    start = time.monotonic()
    verified = deid("verify", str(out), "--against", str(inputs))
    verify_s = time.monotonic() - start
    rows = list(csv.DictReader((out.parent / "fuzz-out.audit" / "files.csv").open()))
    ends = [r for r in rows if r["status"] != "written"]
    return {"inputs": count, "seed": seed, "kinds": Counter(kinds.values()), "run_code": ran.returncode,
            "statuses": Counter(r["status"] for r in rows),
            "accounted": sorted(r["input"] for r in rows) == sorted(kinds),
            "internal": sum("internal error" in r["reason"] for r in rows),
            "reasons": Counter(r["reason"].split(" (")[0].split(":")[0] for r in ends),
            "tracebacks": ("Traceback" in ran.stderr) + ("Traceback" in verified.stdout + verified.stderr),
            "verify_code": verified.returncode,
            "leaks": [line for line in verified.stdout.splitlines() if line.startswith("LEAK")],
            "run_s": run_s, "verify_s": verify_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--kills", type=int, default=0)
    parser.add_argument("--terms", type=int, default=0)
    parser.add_argument("--disk", action="store_true")
    parser.add_argument("--fuzz", type=int, default=0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--record", type=Path)
    args = parser.parse_args()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    (SCRATCH / "key").write_text(KEY)
    lines = []
    if args.corpus and (args.kills or args.terms or args.disk):
        shutil.rmtree(SCRATCH / "ref", ignore_errors=True)
        shutil.rmtree(SCRATCH / "ref.audit", ignore_errors=True)
        deid("run", str(args.corpus), str(SCRATCH / "ref"), "--header-only", "-j", "2")
        reference = digest(SCRATCH / "ref")
        outputs = sum(1 for name in reference if name.endswith(".dcm"))
        clean = json.loads((SCRATCH / "ref.audit" / "summary.json").read_text())["counts"]
        lines += [f"clean run: {json.dumps(clean)} (exit 1 when something is quarantined)"]
        rng = random.Random(args.seed)
        trials = [("SIGKILL", signal.SIGKILL)] * args.kills + [("SIGTERM", signal.SIGTERM)] * args.terms
        if trials:
            lines += ["", f"corpus: {args.corpus} ({outputs} outputs); `deid run --header-only -j 2`, signal after a "
                      "random number of outputs; then run again", "",
                      "| signal | outputs when sent | processes | exit code | left after 70 s | all gone after s | "
                      "resume exit | release identical to a clean run |", "|---|---|---|---|---|---|---|---|"]
            for name, sig in trials:
                t = signal_trial(args.corpus, reference, sig, rng.randint(10, outputs * 3 // 4))
                lines.append(f"| {name} | {t['written']} | {t['processes']} | {t['code']} | {t['left']} | "
                             f"{t['gone_s']:.2f} | {t['resume_code']} | {'yes' if t['identical'] else 'NO'} |")
                print(lines[-1], flush=True)
        if args.disk:
            release_bytes = sum((SCRATCH / "ref" / name).stat().st_size + 4096 for name in reference)
            t = disk_trial(args.corpus, reference, release_bytes)
            lines += ["", "full disk: " + (
                f"OUT on a {t['size_kb']} KB tmpfs: exit {t['code']}, traceback {t['traceback']}; last line "
                f"`{t['line']}`; ledger recorded {json.dumps(t['recorded'])} ({t['on_disk']} objects on disk), "
                f"empty folders left {t['empty_folders']}; after growing the tmpfs the re-run exits "
                f"{t['rerun_code']} and the release is {'identical' if t['identical'] else 'NOT identical'} "
                "to a clean run's" if t else "mount refused (not root?)")]
            print(lines[-1], flush=True)
    if args.fuzz:
        t = fuzz_trial(args.fuzz, args.seed)
        lines += ["", f"fuzz: {t['inputs']} mutated inputs (seed {t['seed']}; "
                  + ", ".join(f"{k} {v}" for k, v in sorted(t["kinds"].items())) + ")",
                  f"run: exit {t['run_code']} in {t['run_s']:.1f} s; "
                  + ", ".join(f"{k} {v}" for k, v in sorted(t["statuses"].items()))
                  + f"; every input accounted for: {t['accounted']}; internal errors: {t['internal']}; "
                  f"tracebacks (run + verify): {t['tracebacks']}",
                  "reasons: " + ", ".join(f"{k} {v}" for k, v in t["reasons"].most_common()),
                  f"verify: exit {t['verify_code']} in {t['verify_s']:.1f} s; leaks reported: {len(t['leaks'])}"]
        print("\n".join(lines[-4:]), flush=True)
    if args.record:
        record.append(args.record, "Fault trials", "\n".join(lines))


if __name__ == "__main__":
    main()
