"""Atomic writes into the release: each file is staged in ``OUT/.deid-staging`` (the same file
system, so the move is atomic) and renamed into place; every run clears what a killed run left.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

STAGING = ".deid-staging"


def write_staged(output_root: Path, relpath: Path, pieces: Iterable[bytes | memoryview]) -> None:
    """Write ``pieces``, one after the other, to ``output_root / relpath``: the whole file, or
    (if the process dies) nothing at all."""
    path = output_root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = output_root / STAGING
    staging.mkdir(exist_ok=True)
    tmp = staging / f"{os.getpid()}-{path.name}"
    with tmp.open("wb") as file:
        file.writelines(pieces)
    os.replace(tmp, path)


def clear_staging(output_root: Path) -> None:
    """Remove the staging folder and whatever a killed run left in it."""
    shutil.rmtree(output_root / STAGING, ignore_errors=True)
