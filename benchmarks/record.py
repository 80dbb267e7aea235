"""Append a benchmark's table to benchmarks/RESULTS.md with the date, the machine and the command."""

from __future__ import annotations

import os
import platform
import sys
from datetime import date
from pathlib import Path


def machine() -> str:
    """Architecture, CPU model, cores and Python version of this machine."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
               platform.processor() or "CPU")
    return f"{platform.machine()}, {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}"


def append(path: Path, title: str, text: str, note: str = "") -> None:
    """Append ``text`` under ``## title, <date>`` with the machine, ``note`` and the command line."""
    script = Path(sys.argv[0]).name
    header = (f"\n## {title}, {date.today()}\n\nMachine: {machine()}{'; ' + note if note else ''}. "
              f"Command: `python benchmarks/{script} {' '.join(sys.argv[1:])}`\n\n")
    with path.open("a") as handle:
        handle.write(header + text + "\n")
