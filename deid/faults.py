"""Faults of the environment: a full disk, a read-only or vanished mount, a folder deid may not
write. They are not properties of an input: the run stops with one line and records nothing as
finished that was not written, so that a run after the fault is mended completes the release.
"""

from __future__ import annotations

import errno
import sqlite3


class EnvironmentFault(Exception):
    """Writing the release or the audit folder failed for a reason of the machine, not of an
    input. The message names where and why, never an input."""


def environment_fault(where: str, error: OSError | sqlite3.Error) -> EnvironmentFault:
    """The fault of failing to write ``where`` (``the output folder``, ``the audit folder``).

    Parameters
    ----------
    where
        What could not be written, in words.
    error
        The operating system's or SQLite's error.

    Returns
    -------
    EnvironmentFault
        With a message such as ``cannot write the output folder: No space left on device
        (ENOSPC)``.
    """
    if isinstance(error, OSError) and error.errno is not None:
        reason = f"{error.strerror or 'error'} ({errno.errorcode.get(error.errno, error.errno)})"
    else:
        reason = str(error) or type(error).__name__
    return EnvironmentFault(f"cannot write {where}: {reason}")
