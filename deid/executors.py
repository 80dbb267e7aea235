"""Where the per-file work runs: in process, on local worker processes, or on a Dask cluster.

Every executor yields :class:`~deid.audit.FileResult` objects as files finish, so the driver
keeps the ledger, the manifest and the progress bar exact. Workers build their stages once per
process (:func:`deid.process.worker_for`), never per file. A worker that dies loses no file: its
files run again, and one that keeps killing its worker is quarantined.
"""

from __future__ import annotations

import signal
from collections import deque
from collections.abc import Callable, Generator, Iterator
from functools import partial

from deid.audit import FileResult

#: At most this many files per Dask task: amortises the scheduler's per-task cost (a run on a
#: two-worker LocalCluster is 4 % faster than with 32); a killed worker costs at most one chunk
#: of repeated work.
DASK_CHUNK = 128

#: At most this many files per local task.
LOCAL_CHUNK = 32

#: Chunks per worker queued or running at once: local workers keep two in flight, and Dask's
#: scheduler sends a single-threaded worker as many (``worker-saturation`` 1.1, rounded up).
IN_FLIGHT = 2

#: Modules every worker needs, imported once by the forkserver that forks the workers, so that
#: no worker imports pydicom itself; :mod:`deid.preload`, last, freezes them.
WORKER_MODULES = ["deid.executors", "deid.pipeline", "deid.process"]

#: Seconds an idle local worker waits for work before it exits (also the longest a worker outlives
#: a driver that was killed).
WORKER_IDLE = 60

#: A local cluster's Dask configuration; the figures are for a two-worker run here.
LOCAL_CLUSTER_CONFIG = {
    # The nanny starts workers with a fixed malloc trim threshold, which makes glibc map and unmap
    # every pixel buffer afresh: about 20 % more CPU per file.
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    # Each worker samples its task thread's stack every 10 ms for the dashboard's profile, which a
    # local cluster (started without a dashboard) never shows: about 7 % of the wall time.
    "distributed.worker.profile.enabled": False,
    # The scheduler, each nanny and each worker time their event loop every 20 ms, to warn when it
    # was blocked for seconds: the wake-ups take the GIL from the task thread, about 4 % of the
    # wall time. Once a second still catches a blocked loop.
    "distributed.admin.tick.interval": "1s",
}

ProcessFile = Callable[[str], FileResult]


def process_chunk(process: ProcessFile, sources: list[str]) -> list[FileResult]:
    """Process a chunk of files in one task."""
    return [process(src) for src in sources]


def chunked(todo: list[str], workers: int, most: int) -> list[list[str]]:
    """``todo`` in chunks of at most ``most`` files that shrink towards the end, each no more than
    a share of what remains (one per chunk in flight), so that the workers finish together: with
    equal chunks, one worker may be left a whole chunk to run alone."""
    chunks, start = [], 0
    while start < len(todo):
        size = max(1, min(most, (len(todo) - start) // (IN_FLIGHT * workers)))
        chunks.append(todo[start : start + size])
        start += size
    return chunks


def run_local(process: ProcessFile, todo: list[str], jobs: int) -> Iterator[FileResult]:
    """In process for one job, else on ``jobs`` local worker processes (``-1``: every core this
    process may use), results in completion order.

    The workers start, and files are dispatched, when the iteration starts.
    """
    if jobs == 1:
        return map(process, todo)
    from loky import cpu_count

    return LocalResults(process, todo, cpu_count() if jobs < 0 else jobs)


class LocalResults:
    """The results of local worker processes (loky's), file by file as chunks finish.

    The workers are forked from a forkserver that has imported :data:`WORKER_MODULES` (where the
    platform has one; else loky starts each afresh), and ignore Ctrl-C, which the driver handles.
    :data:`IN_FLIGHT` chunks per worker are in flight. A worker that dies (a codec's crash, the
    kernel's OOM killer) fails the chunks in flight: their files run again one per task on fresh
    workers, and a file that fails that way runs once more alone; if its worker dies again, it is
    quarantined.
    """

    def __init__(self, process: ProcessFile, todo: list[str], workers: int) -> None:
        self.process, self.todo, self.workers = process, todo, workers
        self.executor = None

    def __iter__(self) -> Iterator[FileResult]:
        try:
            failed = yield from self._run(chunked(self.todo, self.workers, LOCAL_CHUNK))
            failed = yield from self._run([[src] for chunk in failed for src in chunk])
            for chunk in failed:
                if (yield from self._run([chunk], alone=True)):
                    yield _worker_died(chunk[0])
        finally:
            self.close()

    def _run(self, chunks: list[list[str]], alone: bool = False) -> Generator[FileResult, None, list]:
        """Run ``chunks``; yield their results and return those whose worker died."""
        from loky import FIRST_COMPLETED, BrokenProcessPool, wait

        pending, failed = deque(chunks), []
        window = 1 if alone else IN_FLIGHT * self.workers
        while pending:
            executor = self._start(1 if alone else self.workers)
            in_flight: dict = {}
            broken = False
            while in_flight or (pending and not broken):
                while pending and not broken and len(in_flight) < window:
                    try:
                        future = executor.submit(process_chunk, self.process, pending[0])
                    except BrokenProcessPool:
                        broken = True
                    else:
                        in_flight[future] = pending.popleft()
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    chunk = in_flight.pop(future)
                    try:
                        results = future.result()
                    except BrokenProcessPool:
                        broken = True
                        failed.append(chunk)
                    else:
                        yield from results
            self.close()
        return failed

    def _start(self, workers: int):
        from loky import ProcessPoolExecutor

        context = _forkserver_context(["loky.process_executor"])
        self.executor = ProcessPoolExecutor(
            workers, timeout=WORKER_IDLE, context=context, initializer=_ignore_sigint
        )
        return self.executor

    def close(self) -> None:
        """Stop the workers; files in flight are given up (written atomically, so nothing is left
        half-written) and run again by the next run. A second call does nothing more."""
        if self.executor is not None:
            self.executor.shutdown(wait=True, kill_workers=True)
            self.executor = None


def _forkserver_context(first: list[str]):
    """The forkserver context, preloading ``first``, :data:`WORKER_MODULES` and
    :mod:`deid.preload`; ``None`` where the platform has no forkserver.

    The forkserver is one per process: the preload of the first to start it holds.
    """
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([*first, *WORKER_MODULES, "deid.preload"])
    return context


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_dask(process: ProcessFile, todo: list[str], scheduler: str) -> Iterator[FileResult]:
    """On a Dask cluster: ``tcp://host:8786`` (an existing scheduler) or ``local:N``.

    The cluster starts and every chunk is submitted before this returns; the iterator yields
    results as chunks finish and closes the client (and a local cluster) at its end.

    A worker that dies mid-task is restarted by its nanny and the task runs again elsewhere;
    outputs are written atomically, so a repeat writes the same bytes. A chunk whose worker
    keeps dying is split into single files, and a file that still kills its worker is
    quarantined.

    The workers of a local cluster fork from a forkserver (where the platform has one) that has
    imported distributed and deid while this process imports distributed; like local workers,
    they inherit this process's environment rather than the nanny's pre-spawn variables.
    """
    local = scheduler.startswith("local:")
    forked = local and _start_forkserver()
    import dask
    from distributed import Client, LocalCluster

    cluster = None
    if local:
        method = {"distributed.worker.multiprocessing-method": "forkserver"} if forked else {}
        with dask.config.set({**LOCAL_CLUSTER_CONFIG, **method}):
            cluster = LocalCluster(
                n_workers=int(scheduler.removeprefix("local:")),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
    client = Client(cluster or scheduler)
    task = partial(process_chunk, process)
    workers = max(1, sum(client.nthreads().values()))  # those connected yet; more may join
    futures = {client.submit(task, chunk, pure=False): chunk for chunk in chunked(todo, workers, DASK_CHUNK)}
    return DaskResults(client, cluster, task, futures)


def _start_forkserver() -> bool:
    """Start the forkserver of a local cluster's workers, preloading distributed; ``False`` where
    the platform has none."""
    if _forkserver_context(["distributed"]) is None:
        return False
    from multiprocessing import forkserver

    forkserver.ensure_running()
    return True


class DaskResults:
    """The results of submitted chunks, file by file as chunks finish; the client (and a local
    cluster) shut down when the iteration ends or :meth:`close` is called."""

    def __init__(self, client, cluster, task: Callable, futures: dict) -> None:
        self.client, self.cluster, self.task, self.futures = client, cluster, task, futures

    def __iter__(self) -> Iterator[FileResult]:
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        try:
            pending = as_completed(self.futures)
            for future in pending:
                chunk = self.futures.pop(future)
                try:
                    yield from future.result()
                except KilledWorker:
                    if len(chunk) == 1:
                        yield _worker_died(chunk[0])
                        continue
                    for src in chunk:
                        single = self.client.submit(self.task, [src], pure=False)
                        self.futures[single] = [src]
                        pending.add(single)
        finally:
            self.close()

    def close(self) -> None:
        """Shut the client and a local cluster down; a second call does nothing more."""
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None


def _worker_died(src: str) -> FileResult:
    return FileResult(src=src, status="quarantined", reason="the worker process died on this file")
