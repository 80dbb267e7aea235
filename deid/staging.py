"""Atomic writes into the release: each file is staged in ``OUT/.deid-staging`` (the same file
system, so the move is atomic) and renamed into place; every run clears what a killed run left.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from deid.faults import environment_fault

STAGING = ".deid-staging"


def write_staged(output_root: Path, relpath: Path, pieces: Iterable[bytes | memoryview]) -> None:
    """Write ``pieces``, one after the other, to ``output_root / relpath``: the whole file, or
    (if the process dies) nothing at all.

    Raises
    ------
    EnvironmentFault
        If the output folder cannot be written (full, read-only, gone, not permitted): a fault
        of the machine, never of the input.
    """
    path = output_root / relpath
    staging = output_root / STAGING
    tmp = staging / f"{os.getpid()}-{path.name}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir(exist_ok=True)
        with tmp.open("wb") as file:
            file.writelines(pieces)
        os.replace(tmp, path)
    except OSError as exc:
        raise environment_fault("the output folder", exc) from None


def clear_staging(output_root: Path) -> None:
    """Remove the staging folder and whatever a killed run left in it."""
    shutil.rmtree(output_root / STAGING, ignore_errors=True)


def remove_empty_folders(root: Path) -> None:
    """Remove every empty folder under ``root`` (not ``root`` itself), deepest first: what a run
    that stopped on a full disk made and could not fill."""
    for folder, _, files in os.walk(root, topdown=False):
        if folder != str(root) and not files:
            try:
                os.rmdir(folder)
            except OSError:
                continue
