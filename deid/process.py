"""The work of one input file, in whichever process runs it: read, gate, stages, write.

Each worker process builds one :class:`~deid.api.Pipeline` per configuration (:func:`worker_for`),
the one the Python API uses, and returns a :class:`~deid.audit.FileResult` per file; it never
writes the ledger or the reports.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

from deid.api import Pipeline
from deid.audit import FileResult
from deid.config import RunConfig
from deid.faults import EnvironmentFault
from deid.reader import (
    check_inflation,
    is_media_directory,
    read_dataset,
)
from deid.review import preview_of
from deid.stage import Quarantined
from deid.writer import output_relpath, replace_file_meta, write_atomic


@lru_cache(maxsize=4)
def worker_for(config: RunConfig) -> Pipeline:
    """The pipeline of ``config``, built once per process (:meth:`deid.api.Pipeline.from_config`).

    Raises
    ------
    ValueError
        If a stage cannot be built (unknown ``--pixels``, a model, rules, ONNX Runtime).
    """
    return Pipeline.from_config(config)


def describe_object(ds) -> dict[str, object]:
    """What the release's manifest and series list say of a written object (no PHI: UIDs are
    the new ones, the series description as the profile left it)."""
    sop_class = ds.SOPClassUID
    return {
        "modality": str(ds.get("Modality", "") or ""),
        "sop_class_name": sop_class.name if sop_class.is_valid and sop_class.name != sop_class else "",
        "study_uid": str(ds.get("StudyInstanceUID", "") or ""),
        "series_uid": str(ds.get("SeriesInstanceUID", "") or ""),
        "series_description": str(ds.get("SeriesDescription", "") or ""),
        "rows": int(ds.get("Rows", 0) or 0),
        "columns": int(ds.get("Columns", 0) or 0),
        "frames": int(ds.get("NumberOfFrames", 1) or 1) if "PixelData" in ds else 0,
        "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
    }


def process_file(
    config: RunConfig, input_root: Path, output_root: Path, src: str, sample_rate: float = 0.0
) -> FileResult:
    """Take one input file to its end: written, quarantined or skipped.

    Never raises for a bad input: every failure becomes a quarantine with a reason; raises
    :class:`~deid.faults.EnvironmentFault` when the output cannot be written. Warnings
    are silenced: pydicom's quote element values, which may be PHI, and the file's outcome is
    logged as its own event.

    Parameters
    ----------
    config
        The run configuration.
    input_root, output_root
        The input tree and the release folder.
    src
        The input, relative to ``input_root``.
    sample_rate
        The probability that an object the text stage examined and found nothing in comes back
        with a picture for the review page (:func:`deid.review.sampled`).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _take_to_end(
            worker_for(config), input_root / src, output_root, src, sample_rate
        )


def _take_to_end(
    pipeline: Pipeline, path: Path, output_root: Path, src: str, sample_rate: float
) -> FileResult:
    try:
        stat = path.stat()
    except OSError as exc:
        return FileResult(src=src, status="quarantined", reason=f"unreadable file ({type(exc).__name__})")
    result = FileResult(src=src, status="quarantined", size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    try:
        data = path.read_bytes()
        check_inflation(data, pipeline.config.max_object_size)
        ds = read_dataset(data)
        if ds is None:
            result.status, result.reason = "skipped", "not DICOM"
            return result
        if is_media_directory(ds):
            result.status, result.reason = "skipped", "DICOMDIR (a media directory; --dicomdir writes one for OUT)"
            return result
        pipeline.check(ds, len(data))
        instance = pipeline.apply(ds)
        replace_file_meta(ds)
        dst = output_relpath(instance, pipeline.pseudo)
        sop_class, meta = str(ds.SOPClassUID), describe_object(ds)  # what cannot be described is not written
        result.sha256 = write_atomic(ds, output_root, dst, data)
    except Quarantined as exc:
        result.reason = str(exc)
        return result
    except EnvironmentFault:
        raise  # the machine's fault, not the input's: the run stops
    except Exception as exc:  # noqa: BLE001 - fail closed on anything unexpected
        result.reason = f"internal error ({type(exc).__name__}); nothing written"
        return result
    result.status = "written"
    result.dst = dst.as_posix()
    result.sop_class, result.meta = sop_class, meta
    result.stages = tuple(instance.stages)
    result.notes = "; ".join(instance.notes)
    result.uid_pairs = instance.header.uid_pairs if instance.header else {}
    result.patient_pair = instance.header.patient_pair if instance.header else ("", "")
    result.regions = tuple(instance.regions)
    result.pixels_changed = instance.pixels_changed
    result.preview = preview_of(instance, result.dst, sample_rate)
    return result


__all__ = ["worker_for", "process_file", "describe_object"]
