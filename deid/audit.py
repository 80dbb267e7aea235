"""The audit trail: a resume ledger and crosswalks kept outside the release, a manifest inside it.

* ``AUDIT/ledger.sqlite``: one row per input (status, output, reason), written by the driver
  only; a re-run skips inputs already done with the same configuration.
* ``AUDIT/files.csv``, ``AUDIT/quarantine.csv``: input path to output or reason (private: input
  paths may carry PHI).
* ``AUDIT/crosswalk_patient_ids.csv``, ``AUDIT/crosswalk_uids.csv``: ``id_old,id_new`` as the
  MIDI-B scorer expects (private).
* ``OUT/manifest.csv``: one row per output object, with no PHI.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

#: The three ends an input can reach.
STATUSES = ("written", "quarantined", "skipped")
MANIFEST_NAME = "manifest.csv"


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


_SCHEMA = """
CREATE TABLE IF NOT EXISTS files(
    src TEXT PRIMARY KEY, token TEXT, size INTEGER, mtime_ns INTEGER, config TEXT,
    status TEXT CHECK(status IN ('written', 'quarantined', 'skipped')),
    dst TEXT, sha256 TEXT, sop_class TEXT, stages TEXT, reason TEXT, notes TEXT);
CREATE TABLE IF NOT EXISTS patients(id_old TEXT PRIMARY KEY, id_new TEXT);
CREATE TABLE IF NOT EXISTS uids(id_old TEXT PRIMARY KEY, id_new TEXT);
CREATE TABLE IF NOT EXISTS configs(config TEXT PRIMARY KEY, profile TEXT, options TEXT);
"""


class Ledger:
    """The SQLite ledger of one output tree, kept in the audit folder.

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
        self.db = sqlite3.connect(audit_dir / "ledger.sqlite")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._pending = 0

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

    def profile(self) -> tuple[str, tuple[str, ...]] | None:
        """The profile name and options of this configuration, once a run has compiled it."""
        row = self.db.execute("SELECT profile, options FROM configs WHERE config = ?", (self.config,)).fetchone()
        return None if row is None else (row[0], tuple(filter(None, row[1].split("+"))))

    def set_profile(self, name: str, options: Iterable[str]) -> None:
        """Remember what this configuration's profile is called and which options it applies."""
        self.db.execute("INSERT OR REPLACE INTO configs VALUES (?, ?, ?)", (self.config, name, "+".join(options)))

    def status_counts(self, sources: Iterable[str]) -> dict[str, int]:
        """Counts per status over ``sources``."""
        wanted = set(sources)
        counts = dict.fromkeys(STATUSES, 0)
        for src, status in self.db.execute("SELECT src, status FROM files"):
            if src in wanted:
                counts[status] += 1
        return counts

    def record(self, result: FileResult, token: str) -> None:
        """Store ``result`` with the log ``token`` of its input; commits every 64 records."""
        self.db.execute(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            ),
        )
        if result.patient_pair[0]:
            self.db.execute("INSERT OR IGNORE INTO patients VALUES (?, ?)", result.patient_pair)
        self.db.executemany("INSERT OR IGNORE INTO uids VALUES (?, ?)", result.uid_pairs.items())
        self._pending += 1
        if self._pending >= 64:
            self.commit()

    def commit(self) -> None:
        self.db.commit()
        self._pending = 0

    def close(self) -> None:
        self.commit()
        self.db.close()

    def write_reports(self, output_root: Path, profile: str, options: str) -> None:
        """Write the release manifest into ``output_root`` and the private reports beside the ledger.

        Every output the ledger knows stays listed, also when its input has since gone: the
        manifest describes what OUT holds. A report whose content is unchanged is not rewritten.
        """
        self.commit()
        rows = list(
            self.db.execute(
                "SELECT src, status, dst, sha256, sop_class, stages, reason, token, notes FROM files "
                "ORDER BY src"
            )
        )
        _write_csv(
            output_root / MANIFEST_NAME,
            ("path", "sop_class_uid", "profile", "options", "stages", "pixel_notes", "sha256"),
            sorted((r[2], r[4], profile, options, r[5], r[8], r[3]) for r in rows if r[1] == "written"),
        )
        _write_csv(
            self.audit_dir / "files.csv",
            ("input", "token", "status", "output", "reason"),
            [(r[0], r[7], r[1], r[2], r[6]) for r in rows],
        )
        _write_csv(
            self.audit_dir / "quarantine.csv",
            ("input", "reason"),
            [(r[0], r[6]) for r in rows if r[1] == "quarantined"],
        )
        for table, name in (("patients", "crosswalk_patient_ids.csv"), ("uids", "crosswalk_uids.csv")):
            _write_csv(
                self.audit_dir / name,
                ("id_old", "id_new"),
                self.db.execute(f"SELECT id_old, id_new FROM {table} ORDER BY id_old"),
            )

    def write_summary(self, summary: dict) -> None:
        (self.audit_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


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
