"""A run's processes end with it: workers that do not outlive the driver, and SIGTERM handled
as Ctrl-C.

On Linux the kernel sends a process a chosen signal when its parent exits
(``prctl(PR_SET_PDEATHSIG)``). The forkserver that forks the local workers asks for SIGKILL
when the driver exits, and each worker asks for SIGKILL when the forkserver exits, so a driver
killed with SIGKILL takes its whole process tree with it. Elsewhere this does nothing, and idle
workers exit after :data:`deid.executors.WORKER_IDLE` seconds.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: ``<linux/prctl.h>``: the signal sent to this process when its parent exits.
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> bool:
    """Have the kernel SIGKILL this process when ``parent``, its parent, exits.

    Parameters
    ----------
    parent
        The parent's process ID as this process saw it at start; if the parent has exited
        already (this process was re-parented), this process exits at once.

    Returns
    -------
    bool
        Whether the platform supports it (Linux).
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:
        os._exit(1)
    return True


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd stop, ``docker stop``, Kubernetes) arrived: handled as Ctrl-C is."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread, so that the run
    stops its workers and flushes its ledger as on Ctrl-C; a second SIGTERM is ignored, so
    that it cannot cut that short."""

    def terminate(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM during whose handling ``exc`` was raised (a clean-up that failed
    in turn), if any: the run was stopped, not broken."""
    seen = set()
    cause = exc.__context__
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return cause
        seen.add(id(cause))
        cause = cause.__context__
    return None
