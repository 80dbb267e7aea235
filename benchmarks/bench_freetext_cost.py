"""CPU share of free-text cleaning in a header-only run, for one source tree of deid.

Usage::

    python benchmarks/bench_freetext_cost.py --corpus DIR [--profile research] [--tree SRC]

Runs the pipeline in one process (``jobs=1``) over ``--corpus`` (make it with make_corpus.py) and
times, in CPU seconds, every call of the header engine's ``needs_cleaning`` and ``clean_text``:
the object's own values in their variants, the detector and the name rule, with the name lexicon's
one load per process. ``--tree`` takes another source tree (an earlier commit from ``git archive``)
to compare before and after side by side. The share of the run is the figure to read on a busy
machine, where a whole run's CPU seconds vary more than the effect. One run a process (the
detector's cache would serve a second): repeat the command, interleaving the trees.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def timed(function: Callable[..., Any], spent: list[float]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[0] += time.process_time() - start

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--profile", default="research")
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree))
    import deid.header.engine as engine
    from deid.config import RunConfig
    from deid.pipeline import run

    spent = [0.0]
    engine.needs_cleaning = timed(engine.needs_cleaning, spent)
    engine.clean_text = timed(engine.clean_text, spent)
    scratch = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    out = Path(tempfile.mkdtemp(dir=scratch)) / "out"
    start = time.process_time()
    run(RunConfig(args.profile, (), b"0" * 32, header_only=True), args.corpus, out, jobs=1, progress=False)
    total = time.process_time() - start
    shutil.rmtree(out.parent)
    print(f"{args.tree} {args.profile}: CPU {total:.2f} s, free-text cleaning {spent[0]:.3f} s "
          f"({100 * spent[0] / total:.1f} %)")


if __name__ == "__main__":
    main()
