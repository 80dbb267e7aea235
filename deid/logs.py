"""structlog set-up: a readable console on a terminal, JSON lines otherwise (cron, CI).

On a terminal a person sees a progress bar, one line per file that was not written and a closing
summary (:mod:`deid.terminal`); the event of every written file, and warnings of the libraries,
only with ``--verbose``. JSON lines carry every file's event. Every line goes through
``tqdm.write``, so a progress bar on the same terminal is redrawn below it, never broken.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any

import structlog


def colors_allowed() -> bool:
    """Whether stderr is a terminal and the user has not asked for plain text (``NO_COLOR``,
    https://no-color.org: present and not empty)."""
    return sys.stderr.isatty() and not os.environ.get("NO_COLOR")


def configure(json: bool | None = None, verbose: bool = False, quiet: bool = False) -> bool:
    """Configure structlog for the CLI.

    Parameters
    ----------
    json
        Force JSON lines (``True``) or the console renderer (``False``); default: JSON unless
        stderr is a terminal.
    verbose
        Also log debug events (skipped files, library warnings) and, on the console, every
        written file.
    quiet
        Only warnings and errors (a file not written, a configuration error).

    Returns
    -------
    bool
        Whether the events are JSON lines.
    """
    if json is None:
        json = not sys.stderr.isatty()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors.append(structlog.processors.JSONRenderer())
    else:
        if not verbose:
            processors.insert(0, _drop_written_files)
        processors += [_one_line_per_file, structlog.dev.ConsoleRenderer(colors=colors_allowed())]
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_BarSafeLogger,
        cache_logger_on_first_use=False,
    )
    warnings.showwarning = _log_warning
    return json


def _drop_written_files(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """On the console, a written file is counted by the progress bar, not told line by line."""
    if event.get("event") == "file" and event.get("status") == "written":
        raise structlog.DropEvent
    return event


def _one_line_per_file(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """On the console, a file's event reads ``quarantined <input>: <reason>``."""
    if event.get("event") != "file":
        return event
    name = event.pop("input", None) or event.pop("src", "")
    event.pop("src", None)
    status, reason, dst = event.pop("status", ""), event.pop("reason", ""), event.pop("dst", "")
    event["event"] = f"{status} {name}" + (f": {reason}" if reason else "") + (f" -> {dst}" if dst else "")
    return event


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings of the libraries (a worker pool's note on memory leaks) as debug events:
    in the logs with ``--verbose``, never on a person's screen otherwise."""
    structlog.get_logger().debug(
        "library warning", category=category.__name__, origin=f"{os.path.basename(filename)}:{lineno}",
        message=str(message),
    )


class _BarSafeLogger:
    """Writes each rendered event to stderr through ``tqdm.write``, which clears a progress bar
    first and redraws it after."""

    def __init__(self, *args: Any) -> None:
        pass

    def msg(self, message: str) -> None:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)

    log = debug = info = warning = warn = error = critical = exception = fatal = failure = msg
