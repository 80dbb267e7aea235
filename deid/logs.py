"""structlog set-up: a readable console on a terminal, JSON lines otherwise (cron, CI)."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(json: bool | None = None, verbose: bool = False) -> bool:
    """Configure structlog for the CLI.

    Parameters
    ----------
    json
        Force JSON lines (``True``) or the console renderer (``False``); default: JSON unless
        stderr is a terminal.
    verbose
        Also log debug events (skipped files).

    Returns
    -------
    bool
        Whether the events are JSON lines.
    """
    if json is None:
        json = not sys.stderr.isatty()
    renderer = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if verbose else logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    return json
