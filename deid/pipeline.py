"""``deid run``: discover, read, gate, stages, write, audit.

The driver lists the inputs, skips those the ledger says are done, and hands the rest to the
workers (:mod:`deid.process`), in process, on local worker processes or on Dask. Only the driver
writes the ledger and the reports. It reads the profile's TOML but leaves pydicom and the stages
to the workers (itself only for one job), so that a nightly run over an unchanged tree finishes in
a fraction of a second and local workers start with the cores to themselves.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from deid.audit import STATUSES, FileResult, Ledger
from deid.config import RunConfig
from deid.executors import run_dask, run_local
from deid.header.profiles import load_profile
from deid.header.pseudonyms import Pseudonymizer
from deid.staging import clear_staging

LOCK_NAME = ".deid.lock"
log = structlog.get_logger()


class LockedError(RuntimeError):
    """Another run holds the lock on this output folder."""


def inventory(root: Path) -> dict[str, tuple[int, int]]:
    """Every regular file under ``root`` (symbolic links are not followed), by relative path in
    sorted order, with the size and modification time that resume compares."""
    found = {}
    prefix = len(str(root).rstrip("/")) + 1
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:  # gone since it was listed
                continue
            if stat.S_ISREG(info.st_mode):
                found[path[prefix:]] = (info.st_size, info.st_mtime_ns)
    return dict(sorted(found.items()))


def discover(root: Path) -> list[str]:
    """Every regular file under ``root`` (symbolic links are not followed), sorted, relative."""
    return list(inventory(root))


@dataclass
class RunSummary:
    """Counts of one run; ``exit_code`` follows the documented convention."""

    counts: dict[str, int]
    processed: int
    resumed: int
    seconds: float

    @property
    def exit_code(self) -> int:
        return 1 if self.counts["quarantined"] else 0


class AuditLock:
    """An exclusive ``flock`` on ``AUDIT/.deid.lock`` for the duration of a run.

    The audit folder belongs to one output folder (``OUT.audit`` by default), so the lock keeps
    two runs off one output without writing anything into the release.
    """

    def __init__(self, audit_dir: Path) -> None:
        self.path = audit_dir / LOCK_NAME

    def __enter__(self) -> AuditLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.path.open("w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise LockedError(f"another deid run holds {self.path}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def default_audit_dir(output_root: Path) -> Path:
    """``OUT.audit`` beside the output folder: never inside the release."""
    return output_root.with_name(output_root.name + ".audit")


def run(
    config: RunConfig,
    input_root: Path,
    output_root: Path,
    audit_dir: Path | None = None,
    jobs: int = -1,
    scheduler: str | None = None,
    name_inputs: bool = False,
) -> RunSummary:
    """De-identify every file under ``input_root`` into ``output_root``.

    Parameters
    ----------
    config
        Profile, options, key and stage switches.
    input_root, output_root
        The input tree and the release folder.
    audit_dir
        Private audit folder; default :func:`default_audit_dir`. Must lie outside ``output_root``.
    jobs
        Local worker processes (``-1``: all cores).
    scheduler
        A Dask scheduler address (``tcp://host:8786``) or ``local:N``; replaces ``jobs``.
    name_inputs
        Name the input path in the event of a file that was not written (for a steward at a
        terminal; archived JSON logs keep to the keyed token).

    Returns
    -------
    RunSummary
        Counts of written, quarantined and skipped inputs over the whole input tree.

    Raises
    ------
    LockedError
        If another run holds the output folder.
    ValueError
        If the audit folder lies inside the output folder or the input inside the output.
    """
    started = time.monotonic()
    input_root, output_root = input_root.resolve(), output_root.resolve()
    audit_dir = (audit_dir or default_audit_dir(output_root)).resolve()
    if audit_dir.is_relative_to(output_root):
        raise ValueError("the audit folder must lie outside the output folder")
    if input_root.is_relative_to(output_root) or output_root.is_relative_to(input_root):
        raise ValueError("input and output folders must not contain each other")
    with AuditLock(audit_dir):
        ledger = Ledger(audit_dir, config.fingerprint())
        try:
            sources = inventory(input_root)
            finished = ledger.finished(output_root)
            todo = [src for src, seen in sources.items() if finished.get(src) != seen]
            profile = ledger.profile()
            made_output = not output_root.exists()
            output_root.mkdir(parents=True, exist_ok=True)
            clear_staging(output_root)
            try:
                if todo:
                    profile = _process(
                        config, todo, input_root, output_root, ledger, jobs, scheduler, name_inputs
                    )
                elif profile is None:
                    profile = _profile_of(config)
            except ValueError:  # a bad profile, rule file or model: leave no empty OUT behind
                clear_staging(output_root)
                if made_output:
                    with contextlib.suppress(OSError):
                        output_root.rmdir()
                raise
            ledger.set_profile(*profile)
            clear_staging(output_root)
            name, options = profile
            ledger.write_reports(output_root, name, "+".join(options))
            counts = ledger.status_counts(sources)
            summary = RunSummary(counts, len(todo), len(sources) - len(todo), time.monotonic() - started)
            ledger.write_summary(
                {"counts": counts, "processed": summary.processed, "resumed": summary.resumed,
                 "profile": name, "options": list(options)}
            )
        finally:
            ledger.close()
    return summary


def _process(
    config: RunConfig,
    todo: list[str],
    input_root: Path,
    output_root: Path,
    ledger: Ledger,
    jobs: int,
    scheduler: str | None,
    name_inputs: bool,
) -> tuple[str, tuple[str, ...]]:
    """Run ``todo`` through the workers; record and log each result as it arrives.

    Returns
    -------
    tuple
        The profile's name and options (:func:`_profile_of`).
    """
    pseudo = Pseudonymizer(config.key)
    process = FileTask(config, input_root, output_root)
    results = run_dask(process, todo, scheduler) if scheduler else run_local(process, todo, jobs)
    try:
        from tqdm import tqdm  # only a run with work shows progress

        profile = _profile_of(config)  # while the workers start; they build the stages, or raise
        by_dst: dict[str, FileResult] = {}
        for result in tqdm(results, total=len(todo), disable=None, unit="file"):
            for settled in _settle_duplicates(by_dst, result, process):
                token = pseudo.token(f"src:{settled.src}")[:10]
                ledger.record(settled, token)
                _log_result(token, settled, name_inputs)
    finally:
        if hasattr(results, "close"):
            results.close()  # stop the workers' remaining tasks if this ended early
    return profile


def _profile_of(config: RunConfig) -> tuple[str, tuple[str, ...]]:
    """The name and options of ``config``'s profile, read from its TOML alone: the driver loads
    neither pydicom nor the stages, which would take CPU from workers starting on the same cores.

    Raises
    ------
    ProfileError
        If the profile cannot be loaded.
    """
    profile = load_profile(config.profile, config.options)
    return profile.name, profile.options


@dataclass(frozen=True)
class FileTask:
    """The per-file work as the workers receive it: picklable and light, so that dispatch
    starts before this process has loaded pydicom; a worker loads it on its first file."""

    config: RunConfig
    input_root: Path
    output_root: Path

    def __call__(self, src: str) -> FileResult:
        from deid.process import process_file

        return process_file(self.config, self.input_root, self.output_root, src)


def _settle_duplicates(
    by_dst: dict[str, FileResult], result: FileResult, process: Callable[[str], FileResult]
) -> list[FileResult]:
    """Keep one output per SOP instance: of inputs that map to the same path, the first by
    input path is written (again, as a later duplicate may have replaced it) and the others
    are quarantined."""
    if result.status != "written":
        return [result]
    first = by_dst.get(result.dst)
    if first is None:
        by_dst[result.dst] = _kept(result)
        return [result]
    winner, loser = sorted((first, result), key=lambda r: r.src)
    winner = process(winner.src)
    by_dst[result.dst] = _kept(winner)
    loser.status, loser.dst, loser.sha256, loser.uid_pairs = "quarantined", "", "", {}
    loser.reason = "another input has the same SOP Instance UID"
    return [winner, loser]


def _kept(result: FileResult) -> FileResult:
    """What :func:`_settle_duplicates` keeps of a written result: its crosswalk entries are in the
    ledger already, and a loser's are dropped, so the driver's memory does not grow with them."""
    return replace(result, uid_pairs={})


def _log_result(token: str, result: FileResult, name_input: bool) -> None:
    """One event per file, without PHI: ``src`` is a keyed token of the input path, which the
    private ``files.csv`` resolves; ``name_input`` adds the path to quarantine events."""
    event = {"src": token, "status": result.status}
    if result.status == "written":
        log.info("file", dst=result.dst, **event)
    elif result.status == "quarantined":
        log.warning("file", reason=result.reason, **event, **({"input": result.src} if name_input else {}))
    else:
        log.debug("file", reason=result.reason, **event)


__all__ = ["RunConfig", "RunSummary", "run", "discover", "inventory", "LockedError", "STATUSES"]
