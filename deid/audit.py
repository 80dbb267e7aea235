"""The audit trail: a resume ledger and crosswalks kept outside the release, a manifest inside it.

* ``AUDIT/ledger.sqlite``: one row per input (status, output, reason), written by the driver
  only; a re-run skips inputs already done with the same configuration.
* ``AUDIT/files.csv``, ``AUDIT/quarantine.csv``: input path to output or reason (private: input
  paths may carry PHI).
* ``AUDIT/crosswalk_patient_ids.csv``, ``AUDIT/crosswalk_uids.csv``: ``id_old,id_new`` as the
  MIDI-B scorer expects (private).
* ``AUDIT/boxes.csv``: every region a pixel stage found in a written object, by layer, and whether
  it was masked; ``AUDIT/review/``: the review page and its pictures (:mod:`deid.review`).
* ``OUT/manifest.csv``: one row per output object, with no PHI.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from deid.review import Preview, write_preview
from deid.stage import Region

#: The three ends an input can reach.
STATUSES = ("written", "quarantined", "skipped")
MANIFEST_NAME = "manifest.csv"
#: The manifest's columns: one row per output object.
MANIFEST_COLUMNS = (
    "path", "sop_class_uid", "sop_class_name", "modality", "study_uid", "series_uid", "rows", "columns",
    "frames", "transfer_syntax", "stages", "pixel_notes", "sha256",
)
SERIES_NAME = "series.csv"
#: The series list's columns: one row per series in the release.
SERIES_COLUMNS = ("patient", "study_uid", "series_uid", "modality", "series_description", "instances")


@dataclass
class FileResult:
    """What became of one input file.

    Attributes
    ----------
    src
        Input path relative to the input root (private).
    status
        One of :data:`STATUSES`.
    size, mtime_ns
        The input's size and modification time, for resume.
    dst
        Output path relative to the output root (written only).
    sha256, sop_class, stages
        Checksum, SOP Class UID and applied stages of the output.
    reason
        Why the input was quarantined or skipped (no PHI).
    notes
        What the pixel stages did (regions masked by layer, encoding), for the manifest.
    uid_pairs, patient_pair
        Crosswalk entries.
    meta
        What the manifest and the series list say of a written object
        (:func:`deid.process.describe_object`); for an input quarantined as a duplicate,
        ``kept``: the input written in its place (private).
    regions
        Regions the pixel stages found (the audit's ``boxes.csv`` and the review page).
    preview
        Pictures for the review page, which the driver writes and then drops.
    pixels_changed
        Whether a stage changed the pixels (the review page shows every such object).
    """

    src: str
    status: str
    size: int = 0
    mtime_ns: int = 0
    dst: str = ""
    sha256: str = ""
    sop_class: str = ""
    stages: tuple[str, ...] = ()
    reason: str = ""
    notes: str = ""
    uid_pairs: dict[str, str] = field(default_factory=dict)
    patient_pair: tuple[str, str] = ("", "")
    meta: dict[str, object] = field(default_factory=dict)
    regions: tuple[Region, ...] = ()
    preview: Preview | None = None
    pixels_changed: bool = False


_SCHEMA = """
CREATE TABLE IF NOT EXISTS files(
    src TEXT PRIMARY KEY, token TEXT, size INTEGER, mtime_ns INTEGER, config TEXT,
    status TEXT CHECK(status IN ('written', 'quarantined', 'skipped')),
    dst TEXT, sha256 TEXT, sop_class TEXT, stages TEXT, reason TEXT, notes TEXT, meta TEXT);
CREATE INDEX IF NOT EXISTS files_by_dst ON files(dst);
CREATE TABLE IF NOT EXISTS patients(id_old TEXT PRIMARY KEY, id_new TEXT);
CREATE TABLE IF NOT EXISTS uids(id_old TEXT PRIMARY KEY, id_new TEXT);
CREATE TABLE IF NOT EXISTS configs(config TEXT PRIMARY KEY, profile TEXT, options TEXT, facts TEXT);
CREATE TABLE IF NOT EXISTS regions(
    src TEXT, layer TEXT, x INTEGER, y INTEGER, width INTEGER, height INTEGER, masked INTEGER, text TEXT);
CREATE INDEX IF NOT EXISTS regions_by_src ON regions(src);
CREATE TABLE IF NOT EXISTS previews(
    src TEXT PRIMARY KEY, kind TEXT CHECK(kind IN ('changed', 'sample')), columns INTEGER, rows INTEGER,
    pictures INTEGER);
"""


#: The ledger commits after this many records, and no later than this many seconds after a
#: record, so that a killed run redoes little: results arrive in bursts, one per chunk of files.
COMMIT_RECORDS = 64
COMMIT_SECONDS = 1.0


class Ledger:
    """The SQLite ledger of one output tree, kept in the audit folder.

    Records are committed every :data:`COMMIT_RECORDS` records, and by a timer thread at most
    :data:`COMMIT_SECONDS` after a record; a lock keeps the two threads' use of the connection
    apart, and an error of a timed commit is raised by the next call from the driver.

    Parameters
    ----------
    audit_dir
        The private audit folder (created if missing).
    config
        Hash of the run configuration; an input is redone when it changes.
    """

    def __init__(self, audit_dir: Path, config: str) -> None:
        audit_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(audit_dir, 0o700)
        self.audit_dir = audit_dir
        self.config = config
        self.db = sqlite3.connect(audit_dir / "ledger.sqlite", check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        for table, column in (("files", "meta"), ("configs", "facts")):  # a ledger of an older deid
            if column not in {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
        self._pending = 0
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._timer_error: sqlite3.Error | None = None

    def finished(self, output_root: Path) -> dict[str, tuple[int, int]]:
        """``src`` to ``(size, mtime_ns)`` of every input that reached its end with this
        configuration and whose output, if any, is still in place."""
        rows = self.db.execute(
            "SELECT src, size, mtime_ns, status, dst FROM files WHERE config = ?", (self.config,)
        )
        root = str(output_root)
        return {
            src: (size, mtime_ns)
            for src, size, mtime_ns, status, dst in rows
            if status != "written" or os.path.isfile(os.path.join(root, dst))
        }

    def profile(self) -> dict | None:
        """What this configuration's profile is (:func:`deid.pipeline.profile_facts`), once a
        run has compiled it."""
        row = self.db.execute("SELECT facts FROM configs WHERE config = ?", (self.config,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def set_profile(self, facts: dict) -> None:
        """Remember what this configuration's profile is: name, options, codes (no PHI)."""
        self.db.execute(
            "INSERT OR REPLACE INTO configs VALUES (?, ?, ?, ?)",
            (self.config, facts["name"], "+".join(facts["options"]), json.dumps(facts, sort_keys=True)),
        )

    def quarantined(self) -> dict[str, tuple[int, int]]:
        """``src`` to ``(size, mtime_ns)`` of every input the ledger holds as quarantined."""
        return _quarantined(self.db)

    def status_counts(self, sources: Iterable[str]) -> dict[str, int]:
        """Counts per status over ``sources``."""
        wanted = set(sources)
        counts = dict.fromkeys(STATUSES, 0)
        for src, status in self.db.execute("SELECT src, status FROM files"):
            if src in wanted:
                counts[status] += 1
        return counts

    def written_to(self, dst: str) -> list[tuple[str, int, int]]:
        """``(src, size, mtime_ns)`` of the inputs this configuration recorded as written to ``dst``."""
        with self._lock:
            return list(
                self.db.execute(
                    "SELECT src, size, mtime_ns FROM files WHERE dst = ? AND status = 'written' AND config = ?",
                    (dst, self.config),
                )
            )

    def record(self, result: FileResult, token: str) -> None:
        """Store ``result`` with the log ``token`` of its input (committed within
        :data:`COMMIT_SECONDS`)."""
        with self._lock:
            self._raise_timer_error()
            self._record(result, token)
            self._pending += 1
            if self._pending >= COMMIT_RECORDS:
                self._commit()
            elif self._timer is None:
                self._timer = threading.Timer(COMMIT_SECONDS, self._commit_on_time)
                self._timer.daemon = True
                self._timer.start()

    def _record(self, result: FileResult, token: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                result.src,
                token,
                result.size,
                result.mtime_ns,
                self.config,
                result.status,
                result.dst,
                result.sha256,
                result.sop_class,
                "+".join(result.stages),
                result.reason,
                result.notes,
                json.dumps(result.meta, sort_keys=True) if result.meta else "",
            ),
        )
        if result.patient_pair[0]:
            self.db.execute("INSERT OR IGNORE INTO patients VALUES (?, ?)", result.patient_pair)
        self._record_review(result, token)
        self.db.executemany("INSERT OR IGNORE INTO uids VALUES (?, ?)", result.uid_pairs.items())

    def _record_review(self, result: FileResult, token: str) -> None:
        """Store the regions of ``result`` and write its pictures for the review page."""
        self.db.execute("DELETE FROM regions WHERE src = ?", (result.src,))
        self.db.execute("DELETE FROM previews WHERE src = ?", (result.src,))
        self.db.executemany(
            "INSERT INTO regions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(result.src, r.layer, *r.box, int(r.masked), r.text) for r in result.regions],
        )
        preview = result.preview
        if result.pixels_changed or preview is not None:
            kind = write_preview(self.audit_dir, token, preview) if preview is not None else "changed"
            columns, rows = (preview.columns, preview.rows) if preview is not None else (0, 0)
            self.db.execute(
                "INSERT INTO previews VALUES (?, ?, ?, ?, ?)",
                (result.src, kind, columns, rows, int(preview is not None)),
            )

    def review(self, samples: int) -> dict[str, list[dict]]:
        """What the review page lists: ``changed`` (every written object whose pixels changed),
        ``samples`` (at most ``samples`` where nothing was found) and ``quarantined``."""
        listed: dict[str, list[dict]] = {"changed": [], "samples": []}
        query = (
            "SELECT f.src, f.token, f.dst, f.stages, f.notes, p.columns, p.rows, p.pictures, p.kind "
            "FROM previews p JOIN files f USING (src) WHERE f.status = 'written' ORDER BY f.dst"
        )
        for src, token, dst, stages, notes, columns, rows, pictures, kind in self.db.execute(query):
            group = listed["changed" if kind == "changed" else "samples"]
            if kind == "sample" and len(group) >= samples:
                continue
            regions = self.db.execute(
                "SELECT layer, x, y, width, height, masked, text FROM regions WHERE src = ? ORDER BY rowid", (src,)
            )
            group.append({
                "token": token, "output": dst, "stages": stages.split("+") if stages else [], "notes": notes,
                "columns": columns, "rows": rows, "pictures": bool(pictures),
                "regions": [
                    {"layer": layer, "x": x, "y": y, "width": w, "height": h, "masked": bool(m), "text": text}
                    for layer, x, y, w, h, m, text in regions
                ],
            })
        quarantined = self.db.execute("SELECT src, reason FROM files WHERE status = 'quarantined' ORDER BY src")
        return {**listed, "quarantined": [{"input": src, "reason": reason} for src, reason in quarantined]}

    def commit(self) -> None:
        """Commit what is recorded.

        Raises
        ------
        sqlite3.Error
            If this commit, or a timed one since the last call, failed (a full disk).
        """
        with self._lock:
            self._raise_timer_error()
            self._commit()

    def _commit(self) -> None:
        """Commit, holding the lock; no timed commit is due after it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.db.commit()
        self._pending = 0

    def _commit_on_time(self) -> None:
        with self._lock:
            self._timer = None
            if not self._pending:
                return
            try:
                self.db.commit()
                self._pending = 0
            except sqlite3.Error as exc:  # raised in the driver's thread by its next call
                self._timer_error = exc

    def _raise_timer_error(self) -> None:
        error, self._timer_error = self._timer_error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Commit what is recorded and close the ledger (closed also when the commit fails)."""
        try:
            self.commit()
        finally:
            self.db.close()

    def write_reports(self, output_root: Path) -> list[tuple]:
        """Write the release manifest and series list into ``output_root`` and the private
        reports beside the ledger.

        Every output the ledger knows stays listed, also when its input has since gone: the
        manifest describes what OUT holds. A report whose content is unchanged is not rewritten.

        Returns
        -------
        list
            The ledger's rows, for the release description: ``(src, status, dst, sha256,
            sop_class, stages, reason, token, notes, meta)`` with ``meta`` decoded.
        """
        self.commit()
        rows = [
            (*row[:9], json.loads(row[9]) if row[9] else {})
            for row in self.db.execute(
                "SELECT src, status, dst, sha256, sop_class, stages, reason, token, notes, meta FROM files "
                "ORDER BY src"
            )
        ]
        written = sorted((r for r in rows if r[1] == "written"), key=lambda r: r[2])
        _write_csv(
            output_root / MANIFEST_NAME,
            MANIFEST_COLUMNS,
            [
                (r[2], r[4], r[9].get("sop_class_name", ""), r[9].get("modality", ""), r[9].get("study_uid", ""),
                 r[9].get("series_uid", ""), r[9].get("rows", ""), r[9].get("columns", ""),
                 r[9].get("frames", ""), r[9].get("transfer_syntax", ""), r[5], r[8], r[3])
                for r in written
            ],
        )
        _write_csv(output_root / SERIES_NAME, SERIES_COLUMNS, series_rows(written))
        _write_csv(
            self.audit_dir / "files.csv",
            ("input", "token", "status", "output", "reason"),
            [(r[0], r[7], r[1], r[2], _private_reason(r)) for r in rows],
        )
        _write_csv(
            self.audit_dir / "boxes.csv",
            ("input", "output", "layer", "x", "y", "width", "height", "masked"),
            self.db.execute(
                "SELECT f.src, f.dst, r.layer, r.x, r.y, r.width, r.height, r.masked FROM regions r "
                "JOIN files f USING (src) WHERE f.status = 'written' ORDER BY f.src, r.rowid"
            ),
        )
        _write_csv(
            self.audit_dir / "quarantine.csv",
            ("input", "reason"),
            [(r[0], _private_reason(r)) for r in rows if r[1] == "quarantined"],
        )
        for table, name in (("patients", "crosswalk_patient_ids.csv"), ("uids", "crosswalk_uids.csv")):
            _write_csv(
                self.audit_dir / name,
                ("id_old", "id_new"),
                self.db.execute(f"SELECT id_old, id_new FROM {table} ORDER BY id_old"),
            )
        return rows

    def write_summary(self, summary: dict) -> None:
        (self.audit_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def quarantined_in(audit_dir: Path) -> dict[str, tuple[int, int]]:
    """``src`` to ``(size, mtime_ns)`` of the inputs the ledger in ``audit_dir`` holds as
    quarantined; empty when there is no ledger. The ledger is only read (as it was last closed)."""
    path = audit_dir / "ledger.sqlite"
    if not path.is_file():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)  # no -wal/-shm files beside it
    try:
        return _quarantined(db)
    finally:
        db.close()


def _quarantined(db: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    rows = db.execute("SELECT src, size, mtime_ns FROM files WHERE status = 'quarantined'")
    return {src: (size, mtime_ns) for src, size, mtime_ns in rows}


def series_rows(written: Iterable[tuple]) -> list[tuple]:
    """One row per series of the written ledger rows (:meth:`Ledger.write_reports`): patient
    pseudonym (the first folder of the output path), study and series UIDs, modality, the
    series description as the profile left it, and the number of instances."""
    series: dict[tuple[str, str, str], list] = {}
    for row in written:
        meta = row[9]
        key = (row[2].split("/", 1)[0], str(meta.get("study_uid", "")), str(meta.get("series_uid", "")))
        entry = series.setdefault(key, [meta.get("modality", ""), meta.get("series_description", ""), 0])
        entry[2] += 1
    return [(*key, *entry) for key, entry in sorted(series.items())]


def _private_reason(row: tuple) -> str:
    """The reason as the private reports give it: with the input that was kept in a
    duplicate's place."""
    kept = row[9].get("kept") if row[1] == "quarantined" else None
    return f"{row[6]} (kept: {kept})" if kept else row[6]


def _write_csv(path: Path, header: tuple[str, ...], rows: Iterable[tuple]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8")
    if path.is_file() and path.read_bytes() == data:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
