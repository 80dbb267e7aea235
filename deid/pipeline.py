"""``deid run``: discover, read, gate, stages, write, audit.

The driver lists the inputs, skips those the ledger says are done, and hands the rest to
joblib workers. Each worker builds its stages once (per configuration) and returns a
:class:`~deid.audit.FileResult` per file; only the driver writes the ledger and the reports.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import structlog
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from tqdm import tqdm

from deid import __version__
from deid.audit import STATUSES, FileResult, Ledger
from deid.executors import run_dask, run_local
from deid.gate import Gate
from deid.header.engine import HeaderEngine
from deid.header.profiles import Profile, load_profile, rules_dir
from deid.header.pseudonyms import Pseudonymizer
from deid.header.stage import HeaderStage
from deid.stage import Item, Quarantined, Stage
from deid.writer import clear_staging, output_relpath, replace_file_meta, write_atomic

LOCK_NAME = ".deid.lock"
#: Choices of the whole-image pixel stage (``deid run --pixels``).
PIXEL_STAGES = ("deform", "dp-pix", "none")
log = structlog.get_logger()


class LockedError(RuntimeError):
    """Another run holds the lock on this output folder."""


@dataclass(frozen=True)
class RunConfig:
    """Everything a worker needs to process a file; picklable and hashable.

    Attributes
    ----------
    profile
        Profile name or path.
    options
        Options added to the profile's own.
    key
        The secret key.
    header_only
        Skip every pixel stage (objects that need pixel cleaning are then quarantined).
    text_mode
        Burned-in text mode, ``all`` or ``sensitive``; ``None``: the per-modality default.
    text_fill
        What masked text becomes: ``black`` or ``background``.
    pixels
        The whole-image pixel stage after the text stage: ``deform``, ``dp-pix`` or ``none``.
    deform_model
        Path of the ONNX deformation model; ``None``: the shipped models/deform.onnx.
    deform_rules
        Path of a site's eligibility rules for the whole-image stage; ``None``: the shipped
        rules/pixel/deform.toml.
    dp_pix
        DP-Pix ``(block, epsilon, m)``.
    """

    profile: str
    options: tuple[str, ...]
    key: bytes
    header_only: bool = False
    text_mode: str | None = None
    text_fill: str = "black"
    pixels: str = "deform"
    deform_model: str | None = None
    deform_rules: str | None = None
    dp_pix: tuple[int, float, float] = (8, 0.1, 1.0)

    def fingerprint(self) -> str:
        """Hash of what decides the output: version, rules, options, stages, model, key (not revealed)."""
        digest = hashlib.sha256()
        switches = "|".join(
            (__version__, self.profile, ",".join(self.options), str(self.header_only), str(self.text_mode),
             self.text_fill, self.pixels, ",".join(map(str, self.dp_pix)))
        )
        digest.update(switches.encode())
        for path in sorted(rules_dir().rglob("*")):
            if path.suffix in (".toml", ".json"):
                digest.update(path.read_bytes())
        site_files = [Path(self.profile)] if Path(self.profile).suffix == ".toml" else []
        if self.deform_rules:
            site_files.append(Path(self.deform_rules))
        if self.pixels == "deform":
            from deid.pixels.deform import default_model

            site_files.append(Path(self.deform_model) if self.deform_model else default_model())
        for path in site_files:
            if path.is_file():
                digest.update(path.read_bytes())
        digest.update(Pseudonymizer(self.key).fingerprint().encode())
        return digest.hexdigest()[:16]


@dataclass
class Worker:
    """The per-process state built once per configuration: profile, key and stages."""

    profile: Profile
    pseudo: Pseudonymizer
    stages: tuple[Stage, ...]


@lru_cache(maxsize=4)
def worker_for(config: RunConfig) -> Worker:
    """Build (once per process) the stages for ``config``."""
    profile = load_profile(config.profile, config.options)
    pseudo = Pseudonymizer(config.key)
    stages: list[Stage] = [
        Gate(profile, pixel_cleaning=not config.header_only),
        HeaderStage(HeaderEngine(profile, pseudo)),
    ]
    if not config.header_only:
        from deid.pixels.text import TextStage  # numpy, OpenCV and OCR only when pixels are cleaned

        stages.append(TextStage(config.text_mode, config.text_fill))
        stages += _whole_image_stages(config, pseudo)
    return Worker(profile, pseudo, tuple(stages))


def _whole_image_stages(config: RunConfig, pseudo: Pseudonymizer) -> list[Stage]:
    """The stage ``config.pixels`` names (none for ``none``).

    Raises
    ------
    ValueError
        If ``pixels`` is unknown, or the stage cannot be built (model, rules, ONNX Runtime).
    """
    if config.pixels not in PIXEL_STAGES:
        raise ValueError(f"unknown pixel stage {config.pixels!r}; choose from {', '.join(PIXEL_STAGES)}")
    if config.pixels == "none":
        return []
    from deid.pixels.eligibility import load_eligibility

    eligibility = load_eligibility(Path(config.deform_rules) if config.deform_rules else None)
    if config.pixels == "deform":
        from deid.pixels.deform import DeformStage

        return [DeformStage(Path(config.deform_model) if config.deform_model else None, eligibility)]
    from deid.pixels.dppix import DpPixStage

    return [DpPixStage(pseudo, *config.dp_pix, eligibility=eligibility)]


def discover(root: Path) -> list[str]:
    """Every regular file under ``root`` (symbolic links are not followed), sorted, relative."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                found.append(path.relative_to(root).as_posix())
    return sorted(found)


def _read(data: bytes):
    """Read a DICOM file's bytes; return ``None`` for non-DICOM; raise Quarantined when broken."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = dcmread(io.BytesIO(data))
    except InvalidDicomError:
        pass
    except Exception as exc:  # noqa: BLE001 - any parser failure means unreadable
        raise Quarantined(f"unreadable DICOM ({type(exc).__name__})") from None
    else:
        if any("End of file reached" in str(w.message) for w in caught):
            raise Quarantined("truncated file")
        _check_complete(ds, len(data))
        return ds
    try:  # no preamble: accept only if it parses as a data set with an SOP class
        ds = dcmread(io.BytesIO(data), force=True)
        return ds if "SOPClassUID" in ds else None
    except Exception:  # noqa: BLE001
        return None


def _check_complete(ds, size: int) -> None:
    """Quarantine a file whose last element is cut short or that has unparsed bytes at its end."""
    if not ds.keys() or getattr(ds.file_meta, "TransferSyntaxUID", "").endswith("1.2.1.99"):
        return  # deflated: the stream length says nothing about the file length
    last = ds.get_item(list(ds.keys())[-1])
    if not isinstance(last, RawDataElement) or last.length == 0xFFFFFFFF or last.value_tell is None:
        return
    if len(last.value or b"") < last.length or last.value_tell + last.length < size:
        raise Quarantined("truncated file")


def _settle_transfer_syntax(ds) -> None:
    """Make the file meta name the transfer syntax the data set was really read with.

    Raises
    ------
    Quarantined
        If the pixel data is encapsulated in a transfer syntax pydicom does not know.
    """
    transfer_syntax = getattr(ds.file_meta, "TransferSyntaxUID", None)
    if transfer_syntax is not None and transfer_syntax.is_transfer_syntax:
        return
    if "PixelData" in ds and ds["PixelData"].is_undefined_length:
        raise Quarantined("encapsulated pixel data in an unknown transfer syntax")
    implicit, little = ds.original_encoding
    ds.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )


def _check_pixels(ds) -> None:
    """Quarantine objects whose native pixel data is shorter than the header says."""
    if "PixelData" not in ds or ds.file_meta.TransferSyntaxUID.is_compressed:
        return
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        expected = (
            ds.Rows * ds.Columns * ds.SamplesPerPixel * frames * ds.BitsAllocated + 7
        ) // 8
    except (AttributeError, TypeError, ValueError):
        raise Quarantined("pixel data without a valid image pixel description") from None
    pixel_data = ds.get_item(0x7FE00010)
    if len(pixel_data.value or b"") < expected:
        raise Quarantined("truncated pixel data")


def process_file(config: RunConfig, input_root: Path, output_root: Path, src: str) -> FileResult:
    """Take one input file to its end: written, quarantined or skipped.

    Never raises for a bad input: every failure becomes a quarantine with a reason.
    """
    path = input_root / src
    stat = path.stat()
    result = FileResult(src=src, status="quarantined", size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    worker = worker_for(config)
    try:
        data = path.read_bytes()
        ds = _read(data)
        if ds is None:
            result.status, result.reason = "skipped", "not DICOM"
            return result
        _settle_transfer_syntax(ds)
        _check_pixels(ds)
        item = Item(ds)
        for stage in worker.stages:
            stage(item)
        replace_file_meta(ds)
        dst = output_relpath(item, worker.pseudo)
        result.sha256 = write_atomic(ds, output_root, dst, data)
    except Quarantined as exc:
        result.reason = str(exc)
        return result
    except Exception as exc:  # noqa: BLE001 - fail closed on anything unexpected
        result.reason = f"internal error ({type(exc).__name__}); nothing written"
        return result
    result.status = "written"
    result.dst = dst.as_posix()
    result.sop_class = str(ds.SOPClassUID)
    result.stages = tuple(item.stages)
    result.notes = "; ".join(item.notes)
    result.uid_pairs = item.uid_pairs
    result.patient_pair = item.patient_pair
    return result


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
    worker = worker_for(config)  # fail early on a bad profile
    with AuditLock(audit_dir):
        output_root.mkdir(parents=True, exist_ok=True)
        clear_staging(output_root)
        ledger = Ledger(audit_dir, config.fingerprint())
        try:
            sources = discover(input_root)
            finished = ledger.finished(output_root)
            todo = []
            for src in sources:
                stat = (input_root / src).stat()
                if finished.get(src) != (stat.st_size, stat.st_mtime_ns):
                    todo.append(src)
            by_dst: dict[str, FileResult] = {}
            process = partial(process_file, config, input_root, output_root)
            if scheduler:
                results = run_dask(process, todo, scheduler)
            else:
                results = run_local(process, todo, jobs)
            for result in tqdm(results, total=len(todo), disable=None, unit="file"):
                for settled in _settle_duplicates(by_dst, result, config, input_root, output_root):
                    token = worker.pseudo.token(f"src:{settled.src}")[:10]
                    ledger.record(settled, token)
                    _log_result(token, settled, name_inputs)
            clear_staging(output_root)
            options = "+".join(worker.profile.options)
            ledger.write_reports(output_root, worker.profile.name, options)
            counts = ledger.status_counts(sources)
            summary = RunSummary(counts, len(todo), len(sources) - len(todo), time.monotonic() - started)
            ledger.write_summary(
                {"counts": counts, "processed": summary.processed, "resumed": summary.resumed,
                 "profile": worker.profile.name, "options": list(worker.profile.options)}
            )
        finally:
            ledger.close()
    return summary


def _settle_duplicates(
    by_dst: dict[str, FileResult],
    result: FileResult,
    config: RunConfig,
    input_root: Path,
    output_root: Path,
) -> list[FileResult]:
    """Keep one output per SOP instance: of inputs that map to the same path, the first by
    input path is written (again, as a later duplicate may have replaced it) and the others
    are quarantined."""
    if result.status != "written":
        return [result]
    first = by_dst.setdefault(result.dst, result)
    if first is result:
        return [result]
    winner, loser = sorted((first, result), key=lambda r: r.src)
    winner = process_file(config, input_root, output_root, winner.src)
    by_dst[result.dst] = winner
    loser.status, loser.dst, loser.sha256, loser.uid_pairs = "quarantined", "", "", {}
    loser.reason = "another input has the same SOP Instance UID"
    return [winner, loser]


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


__all__ = ["RunConfig", "RunSummary", "run", "process_file", "discover", "LockedError", "STATUSES"]
