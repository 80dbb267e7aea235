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
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from deid import release
from deid.audit import MANIFEST_NAME, STATUSES, FileResult, Ledger, quarantined_in
from deid.config import RunConfig
from deid.description import write_description
from deid.dicomdir import DICOMDIR_NAME
from deid.executors import run_dask, run_local
from deid.faults import EnvironmentFault, environment_fault
from deid.header.profiles import load_profile
from deid.pseudonyms import Pseudonymizer
from deid.review import SAMPLE_SIZE, review_page, sample_rate, write_page
from deid.staging import clear_staging, remove_empty_folders

LOCK_NAME = ".deid.lock"
#: The reason of an input quarantined because another input, which was kept, has its SOP Instance UID.
DUPLICATE_REASON = "another input has the same SOP Instance UID"
log = structlog.get_logger()


class LockedError(RuntimeError):
    """Another run holds the lock on this output folder (or its audit folder)."""


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


#: What makes ``deid run`` exit 1: quarantines new in this run (the default), any, or none.
FAIL_ON = ("new", "any", "never")


@dataclass
class RunSummary:
    """Counts of one run; ``exit_code`` follows the documented convention.

    Attributes
    ----------
    counts
        Written, quarantined and skipped inputs over the whole input tree.
    processed, resumed
        Inputs processed by this run, and inputs a previous run had finished.
    seconds
        Wall time of the run.
    new_quarantined
        Inputs quarantined by this run that were not quarantined before as they are.
    release
        The release's identity (:func:`deid.release.identity`): key fingerprint, profile,
        options, pixel configuration.
    this_run
        How many of the inputs processed by this run ended written, quarantined and skipped.
    fail_on
        Which quarantines make the exit code 1 (:data:`FAIL_ON`).
    """

    counts: dict[str, int]
    processed: int
    resumed: int
    seconds: float
    new_quarantined: int = 0
    release: dict = field(default_factory=dict)
    this_run: dict[str, int] = field(default_factory=dict)
    fail_on: str = "new"

    @property
    def exit_code(self) -> int:
        failed = {"new": self.new_quarantined, "any": self.counts["quarantined"], "never": 0}[self.fail_on]
        return 1 if failed else 0


class FolderLock:
    """An exclusive ``flock`` on ``FOLDER/.deid.lock`` (an empty file, created with the folder if
    missing) for the duration of a run.

    ``fcntl.flock`` is released by the kernel when the process dies, so a killed run leaves no
    stale lock, and it works on NFS (as a POSIX lock on the file, which is open for writing).
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME

    def __enter__(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.path.open("a")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise LockedError(f"another deid run holds {self.path.parent}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def default_audit_dir(output_root: Path) -> Path:
    """``OUT.audit`` beside the output folder: never inside the release."""
    return output_root.with_name(output_root.name + ".audit")


def check_folders(input_root: Path, output_root: Path, audit_dir: Path) -> None:
    """Refuse folders that would mix the input, the release and the private audit, and an output
    folder that holds something other than a deid release (resolved paths).

    Raises
    ------
    ValueError
        If the input and the output contain each other, the audit folder lies inside either, or
        the output folder is not empty and not a deid release.
    """
    if input_root.is_relative_to(output_root) or output_root.is_relative_to(input_root):
        raise ValueError("input and output folders must not contain each other")
    for folder, name in ((output_root, "output"), (input_root, "input")):
        if audit_dir.is_relative_to(folder):
            raise ValueError(f"the audit folder must lie outside the {name} folder")
    if not is_release_or_empty(output_root):
        raise ValueError(
            f"{output_root} is not empty and is not a deid release; choose a new or empty output folder"
        )


def is_release_or_empty(output_root: Path) -> bool:
    """Whether ``output_root`` is missing, empty, or a folder deid made: it holds deid's lock or
    release marker (both made before the first output is written), or the manifest of a release
    made before the marker existed."""
    try:
        names = set(os.listdir(output_root))
    except FileNotFoundError:
        return True
    except NotADirectoryError:
        return False
    if not names or LOCK_NAME in names or release.MARKER_NAME in names:
        return True
    manifest = output_root / MANIFEST_NAME
    if MANIFEST_NAME not in names or not manifest.is_file():
        return False
    with manifest.open("rb") as handle:
        return handle.readline().startswith(b"path,sop_class_uid,")


@dataclass(frozen=True)
class Dispatch:
    """How a run hands its files to workers and shows them; nothing here decides an output.

    Attributes are :func:`run`'s parameters of the same names.
    """

    jobs: int | None = None
    scheduler: str | None = None
    name_inputs: bool = False
    progress: bool | None = None


def run(
    config: RunConfig,
    input_root: Path,
    output_root: Path,
    audit_dir: Path | None = None,
    jobs: int | None = None,
    scheduler: str | None = None,
    name_inputs: bool = False,
    rebuild: bool = False,
    fail_on: str = "new",
    dicomdir: bool = False,
    progress: bool | None = None,
) -> RunSummary:
    """De-identify every file under ``input_root`` into ``output_root``.

    Parameters
    ----------
    config
        Profile, options, key and stage switches.
    input_root, output_root
        The input tree and the release folder.
    audit_dir
        Private audit folder; default :func:`default_audit_dir`. Must lie outside ``input_root``
        and ``output_root``.
    jobs
        Local worker processes (``None``: every core), no more than the cores and the files.
    scheduler
        A Dask scheduler address (``tcp://host:8786``) or ``local:N``; replaces ``jobs``.
    name_inputs
        Name the input path in the event of a file that was not written (for a steward at a
        terminal; archived JSON logs keep to the keyed token).
    rebuild
        Build a whole new release aside (with its own audit folder) and swap it in for the old
        one, which stays intact until then; the way to change key, profile, options or pixels.
    fail_on
        Which quarantines make :attr:`RunSummary.exit_code` 1 (:data:`FAIL_ON`).
    dicomdir
        Write ``OUT/DICOMDIR`` (:mod:`deid.dicomdir`); once there, later runs that change the
        release keep it up to date.
    progress
        Show a progress bar on stderr; default: when stderr is a terminal.

    Returns
    -------
    RunSummary
        Counts of written, quarantined and skipped inputs over the whole input tree.

    Raises
    ------
    LockedError
        If another run holds the output folder or the audit folder.
    ReleaseMismatch
        If the output folder holds a release made with another key, profile, options or
        pixel configuration (and ``rebuild`` is not set).
    ValueError
        If the folders are refused (:func:`check_folders`), or a worker argument, the profile,
        a rule file or a model is bad.
    EnvironmentFault
        If the output or the audit folder cannot be written (a full disk, a read-only or
        vanished mount, permissions): what was written is recorded, nothing else, and the
        folders this run made empty are removed. Run again once it is mended.
    """
    started = time.monotonic()
    input_root, output_root = input_root.resolve(), output_root.resolve()
    audit_dir = (audit_dir or default_audit_dir(output_root)).resolve()
    if fail_on not in FAIL_ON:
        raise ValueError(f"--fail-on must be one of {', '.join(FAIL_ON)}")
    try:
        check_folders(input_root, output_root, audit_dir)
        made_output = not output_root.exists()
        with FolderLock(output_root):
            try:
                with FolderLock(audit_dir):
                    summary = _run_or_rebuild(
                        config, input_root, output_root, audit_dir,
                        Dispatch(jobs, scheduler, name_inputs, progress), rebuild, dicomdir,
                    )
            except BaseException as exc:
                _clean_up_stopped_run(output_root, made_output, faulted=_is_fault(exc))
                raise
    except (OSError, sqlite3.Error) as exc:
        raise _fault(exc, output_root) from None
    summary.seconds = time.monotonic() - started
    summary.fail_on = fail_on
    return summary


def _run_or_rebuild(
    config: RunConfig,
    input_root: Path,
    output_root: Path,
    audit_dir: Path,
    dispatch: Dispatch,
    rebuild: bool,
    dicomdir: bool,
) -> RunSummary:
    """:func:`run` once both folders are locked: in place, or aside and swapped in."""
    release.recover(output_root, audit_dir)
    if not rebuild:
        return _run_locked(config, input_root, output_root, audit_dir, dispatch, dicomdir)
    new_output, new_audit = release.aside(output_root), release.aside(audit_dir)
    try:
        summary = _run_locked(
            config, input_root, new_output, new_audit, dispatch,
            dicomdir or (output_root / DICOMDIR_NAME).exists(), quarantined_in(audit_dir),
        )
    except BaseException:
        for folder in (new_output, new_audit):
            shutil.rmtree(folder, ignore_errors=True)
        raise
    release.swap_in(output_root, audit_dir)
    return summary


def _is_fault(exc: BaseException) -> bool:
    return isinstance(exc, (EnvironmentFault, OSError, sqlite3.Error))


def _fault(exc: OSError | sqlite3.Error, output_root: Path) -> EnvironmentFault:
    """The environment fault of ``exc``, raised by the driver, naming the folder it concerns."""
    filename = getattr(exc, "filename", None)
    in_output = filename is not None and Path(os.fsdecode(filename)).is_relative_to(output_root)
    return environment_fault("the output folder" if in_output else "the audit folder", exc)


def _clean_up_stopped_run(output_root: Path, made_output: bool, faulted: bool) -> None:
    """After a run that stopped early (still holding the output folder): remove the staging
    folder, the empty folders a fault left, and the output folder itself if this run made it
    and wrote nothing into it but its lock and marker."""
    clear_staging(output_root)
    if faulted:
        remove_empty_folders(output_root)
    if made_output:
        with contextlib.suppress(OSError):
            if set(os.listdir(output_root)) <= {LOCK_NAME, release.MARKER_NAME}:
                for name in (release.MARKER_NAME, LOCK_NAME):
                    (output_root / name).unlink(missing_ok=True)
            output_root.rmdir()


def _run_locked(
    config: RunConfig,
    input_root: Path,
    output_root: Path,
    audit_dir: Path,
    dispatch: Dispatch,
    dicomdir: bool,
    known_quarantined: dict[str, tuple[int, int]] | None = None,
) -> RunSummary:
    """:func:`run` once both folders are locked and checked (``output_root`` may be a rebuild's
    folder aside): resume, process, reports; ``known_quarantined``: inputs an earlier release
    quarantined (a rebuild's), which are not new."""
    ledger = Ledger(audit_dir, config.fingerprint())
    try:
        sources = inventory(input_root)
        finished = ledger.finished(output_root)
        todo = [src for src, seen in sources.items() if finished.get(src) != seen]
        facts = ledger.profile() or profile_facts(config)
        name, options = facts["name"], tuple(facts["options"])
        identity = release.identity(config, name, options)
        this_run = dict.fromkeys(STATUSES, 0)
        output_root.mkdir(parents=True, exist_ok=True)
        release.claim(output_root, identity)
        release.write_json_atomic(audit_dir / release.AUDIT_COPY_NAME, identity)
        clear_staging(output_root)
        quarantined_before = known_quarantined or ledger.quarantined()
        if todo:
            this_run = _process(config, todo, input_root, output_root, ledger, dispatch)
        ledger.set_profile(facts)
        clear_staging(output_root)
        rows = ledger.write_reports(output_root)
        if dicomdir or (todo and (output_root / DICOMDIR_NAME).exists()):
            from deid.dicomdir import write_dicomdir

            write_dicomdir(output_root, [row[2] for row in rows if row[1] == "written"])
        write_description(
            output_root, audit_dir, identity, facts, rows, Path(config.deform_model) if config.deform_model else None
        )
        counts = ledger.status_counts(sources)
        if todo or not review_page(audit_dir).is_file():  # an unchanged re-run keeps the page it has
            write_page(audit_dir, {"counts": counts, "profile": name, "options": options,
                                   **ledger.review(SAMPLE_SIZE)})
        new_quarantined = sum(
            1 for src, seen in ledger.quarantined().items() if src in sources and quarantined_before.get(src) != seen
        )
        summary = RunSummary(counts, len(todo), len(sources) - len(todo), 0.0, new_quarantined, identity, this_run)
        ledger.write_summary(
            {"counts": counts, "processed": summary.processed, "resumed": summary.resumed,
             "new_quarantined": new_quarantined, "profile": name, "options": list(options),
             "key_fingerprint": identity["key_fingerprint"], "release": identity}
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
    dispatch: Dispatch,
) -> dict[str, int]:
    """Run ``todo`` through the workers; record and log each result as it arrives.

    Returns
    -------
    dict
        How many of ``todo`` ended written, quarantined and skipped.
    """
    pseudo = Pseudonymizer(config.key)
    process = FileTask(config, input_root, output_root, sample_rate(len(todo)))
    results = (
        run_dask(process, todo, dispatch.scheduler) if dispatch.scheduler else run_local(process, todo, dispatch.jobs)
    )
    try:
        from tqdm import tqdm  # only a run with work shows progress

        by_dst: dict[str, FileResult] = {}
        ends: dict[str, str] = {}
        redone = set(todo)

        def recorded(dst: str) -> tuple[FileResult, bool] | None:
            """The input an earlier run wrote to ``dst`` and this run does not redo, and whether
            it is still there."""
            for src, size, mtime_ns in ledger.written_to(dst):
                if src not in redone:
                    return FileResult(src, "written", size, mtime_ns, dst), (input_root / src).is_file()
            return None

        shown = dispatch.progress
        bar = tqdm(results, total=len(todo), disable=None if shown is None else not shown, unit="file",
                   leave=False, dynamic_ncols=True)
        for result in bar:
            for settled in _settle_duplicates(by_dst, result, process, recorded):
                if settled.src in redone:
                    ends[settled.src] = settled.status
                token = pseudo.token(f"src:{settled.src}")[:10]
                ledger.record(settled, token)
                kept = str(settled.meta.get("kept", "")) if settled.status == "quarantined" else ""
                _log_result(token, settled, dispatch.name_inputs, pseudo.token(f"src:{kept}")[:10] if kept else "")
        ledger.commit()
    finally:
        if hasattr(results, "close"):
            results.close()  # stop the workers' remaining tasks if this ended early
    counts = dict.fromkeys(STATUSES, 0)
    for status in ends.values():
        counts[status] += 1
    return counts


def profile_facts(config: RunConfig) -> dict:
    """What the release description and the release's identity say of ``config``'s profile:
    ``name``, ``description``, ``options`` (in force), ``own_options`` (those the profile
    declares), ``codes`` (CID 7050 value and meaning), ``date_option`` and ``weakened``.

    Read from the profile's TOML alone: the driver loads neither pydicom nor the stages, which
    would take CPU from workers starting on the same cores. A profile that cannot claim the
    Basic profile (:attr:`~deid.header.profiles.Profile.weakened`) is said so here, once per
    configuration (the ledger remembers the facts).

    Raises
    ------
    ProfileError
        If the profile cannot be loaded.
    """
    profile = load_profile(config.profile, config.options)
    if profile.weakened:
        log.warning(
            "the site profile keeps what the Basic profile removes; CID 7050 113100 is not claimed",
            kept="; ".join(profile.weakened),
        )
    return {
        "name": profile.name,
        "description": profile.description,
        "options": list(profile.options),
        "own_options": [o for o in profile.options if o not in config.options],
        "codes": [[code.value, code.meaning] for code in profile.codes],
        "date_option": profile.date_option,
        "weakened": list(profile.weakened),
    }


@dataclass(frozen=True)
class FileTask:
    """The per-file work as the workers receive it: picklable and light, so that dispatch
    starts before this process has loaded pydicom; a worker loads it on its first file."""

    config: RunConfig
    input_root: Path
    output_root: Path
    sample_rate: float = 0.0

    def __call__(self, src: str) -> FileResult:
        from deid.process import process_file

        return process_file(self.config, self.input_root, self.output_root, src, self.sample_rate)


def _settle_duplicates(
    by_dst: dict[str, FileResult],
    result: FileResult,
    process: Callable[[str], FileResult],
    recorded: Callable[[str], tuple[FileResult, bool] | None] = lambda dst: None,
) -> list[FileResult]:
    """Keep one output per SOP instance: of inputs that map to the same path, the first by
    input path is written (again, as a later duplicate may have replaced it) and the others
    are quarantined.

    ``recorded(dst)`` gives the input an earlier run wrote to ``dst`` (which this run does not
    redo) and whether it is still there: an incremental run settles against it too, and one
    whose input has gone gives way to the input that replaced it.
    """
    if result.status != "written":
        return [result]
    first = by_dst.get(result.dst)
    if first is None:
        earlier = recorded(result.dst)
        if earlier is None:
            by_dst[result.dst] = _kept(result)
            return [result]
        first, present = earlier
        if not present:
            by_dst[result.dst] = _kept(result)
            return [result, _as_duplicate(first, result)]
    winner, loser = sorted((first, result), key=lambda r: r.src)
    winner = process(winner.src)
    by_dst[result.dst] = _kept(winner)
    return [winner, _as_duplicate(loser, winner)]


def _as_duplicate(loser: FileResult, winner: FileResult) -> FileResult:
    """``loser`` quarantined because ``winner``, which has its SOP Instance UID, is kept."""
    loser.status, loser.dst, loser.sha256, loser.uid_pairs = "quarantined", "", "", {}
    loser.regions, loser.preview, loser.pixels_changed = (), None, False
    loser.reason = DUPLICATE_REASON
    loser.meta = {"kept": winner.src}
    return loser


def _kept(result: FileResult) -> FileResult:
    """What :func:`_settle_duplicates` keeps of a written result: its crosswalk entries are in the
    ledger already, and a loser's are dropped, so the driver's memory does not grow with them (nor
    with the pictures, written already)."""
    return replace(result, uid_pairs={}, preview=None)


def _log_result(token: str, result: FileResult, name_input: bool, kept_token: str = "") -> None:
    """One event per file, without PHI: ``src`` is a keyed token of the input path, which the
    private ``files.csv`` resolves; ``name_input`` adds the path to quarantine events.
    ``kept_token`` names the input kept in a duplicate's place the same way."""
    event = {"src": token, "status": result.status}
    if result.status == "written":
        log.info("file", dst=result.dst, **event)
    elif result.status == "quarantined":
        if kept_token:
            event["kept"] = str(result.meta["kept"]) if name_input else kept_token
        log.warning("file", reason=result.reason, **event, **({"input": result.src} if name_input else {}))
    else:
        log.debug("file", reason=result.reason, **event)


__all__ = [
    "RunConfig", "RunSummary", "run", "discover", "inventory", "LockedError", "STATUSES", "FAIL_ON", "EnvironmentFault"
]
