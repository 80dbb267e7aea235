"""``deid run --dicomdir``: a fresh DICOMDIR for the release, made with pydicom's FileSet.

PS3.10 File IDs are at most eight components of at most eight characters (A-Z, 0-9, _), which the
release's pseudonym paths are not. The file-set's root is the release folder: ``OUT/DICOMDIR``
indexes ``OUT/PT000000/ST000000/SE000000/IM000000`` and so on, each a hard link to the release's
object (no second copy on disk; a copy where the file system has no hard links). Both are made
anew, from the objects the manifest lists, by a run with ``--dicomdir`` and by every later run
that changes the release while ``OUT/DICOMDIR`` exists. The File-set UID is derived from the
objects' paths, so the same release gives the same DICOMDIR.

The directory records hold what the objects hold. A Type 1 record key that the profile emptied
(Study ID, Study Date and Time under Basic, Series and Instance Number when removed) gets a dummy
in the record only, as Basic's D action would: ``DEID``, ``19000101``, ``000000``, ``1``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

DICOMDIR_NAME = "DICOMDIR"
#: The top folders of the file-set (one per patient record), beside the release's own folders.
MEDIA_FOLDER = re.compile(r"^PT[0-9A-Z]{6}$")
#: Dummies for Type 1 record keys that the profile emptied.
_DUMMIES = {"StudyID": "DEID", "StudyDate": "19000101", "StudyTime": "000000", "SeriesNumber": 1,
            "InstanceNumber": 1, "PatientID": "DEID"}
_STAGING = ".deid-staging/dicomdir"


def write_dicomdir(output_root: Path, objects: list[str]) -> int:
    """Write ``OUT/DICOMDIR`` and its file-set folders for ``objects`` (paths relative to
    ``output_root``), replacing those of an earlier run.

    Returns
    -------
    int
        The number of objects the DICOMDIR indexes.

    Raises
    ------
    ValueError
        If pydicom cannot make a record for an object (a record key it needs is missing).
    """
    from pydicom import dcmread  # only a run that writes a DICOMDIR reads its objects again
    from pydicom.fileset import FileSet
    from pydicom.uid import UID

    staging = output_root / _STAGING
    shutil.rmtree(staging, ignore_errors=True)
    fileset = FileSet()
    fileset.ID = "DEID"
    digest = hashlib.sha256("\n".join(sorted(objects)).encode()).digest()
    fileset.UID = UID("2.25." + str(int.from_bytes(digest[:16], "big")))
    originals = {}
    for relpath in sorted(objects):
        path = output_root / relpath
        header = dcmread(path, stop_before_pixels=True)
        for keyword, dummy in _DUMMIES.items():
            if header.get(keyword) in (None, ""):
                setattr(header, keyword, dummy)
        originals[fileset.add(header).SOPInstanceUID] = path
    staging.mkdir(parents=True)
    if len(fileset):
        fileset.write(staging)  # writes the headers it was given: each is replaced by the object
        for instance in fileset:
            _link_over(originals[instance.SOPInstanceUID], staging / instance.FileID)
    _swap_in(output_root, staging)
    return len(fileset)


def _link_over(original: Path, written: Path) -> None:
    """Replace ``written`` by a hard link to ``original``, or by a copy where the file system
    has no hard links."""
    link = written.with_name(written.name + ".link")
    try:
        os.link(original, link)
    except OSError:
        shutil.copyfile(original, link)
    os.replace(link, written)


def _swap_in(output_root: Path, staging: Path) -> None:
    """Replace the DICOMDIR and file-set folders in ``output_root`` by those in ``staging``."""
    for old in output_root.iterdir():
        if old.name == DICOMDIR_NAME:
            old.unlink()
        elif old.is_dir() and MEDIA_FOLDER.match(old.name):
            shutil.rmtree(old)
    for new in sorted(staging.iterdir(), key=lambda p: p.name == DICOMDIR_NAME):  # the index last
        os.replace(new, output_root / new.name)
    shutil.rmtree(staging, ignore_errors=True)


__all__ = ["write_dicomdir", "DICOMDIR_NAME", "MEDIA_FOLDER"]
