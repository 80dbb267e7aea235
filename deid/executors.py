"""Where the per-file work runs: in process, on local worker processes, or on a Dask cluster.

Every executor yields :class:`~deid.audit.FileResult` objects as files finish, so the driver
keeps the ledger, the manifest and the progress bar exact. Workers build their stages once per
process (:func:`deid.process.worker_for`), never per file. A worker that dies loses no file: its
files run again, and one that keeps killing its worker is quarantined.
"""

from __future__ import annotations

import signal
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
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

#: Seconds an idle local worker waits for work before it exits (where the platform cannot tie
#: the workers to the driver, :mod:`deid.lifeline`, also how long they outlive a killed driver).
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

#: Seconds to wait for a Dask scheduler to answer (Dask's own default is 30 s, then a traceback).
CONNECT_TIMEOUT = 10

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


class WorkerArgumentError(ValueError):
    """A worker count or scheduler address that cannot work (a usage error)."""


class SchedulerError(ValueError):
    """The Dask scheduler cannot be used: Dask is missing, or the scheduler does not answer."""


def worker_count(jobs: int | None, files: int) -> int:
    """How many local workers to start: ``jobs`` (``None``: every core this process may use,
    container CPU quotas included), but no more than the cores and no more than ``files``.

    Raises
    ------
    WorkerArgumentError
        If ``jobs`` is not a positive number.
    """
    if jobs is not None and jobs < 1:
        raise WorkerArgumentError(f"--jobs must be a positive number of worker processes, not {jobs}")
    from loky import cpu_count

    cores = cpu_count()
    return max(1, min(cores if jobs is None else jobs, cores, files))


def parse_scheduler(address: str) -> int | str:
    """The worker count of ``local:N``, or a Dask scheduler address as it is.

    Raises
    ------
    WorkerArgumentError
        If ``local:N`` does not give a positive whole number, or the address has no scheme
        (``tcp://``, ``tls://``, ...).
    """
    if address.startswith("local:"):
        count = address.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise WorkerArgumentError(
                f"--scheduler local:N needs a positive number of workers, not {count!r}"
            )
        return int(count)
    if "://" not in address:
        raise WorkerArgumentError(
            f"--scheduler takes a Dask scheduler address (tcp://host:8786) or local:N, not {address!r}"
        )
    return address


def run_local(process: ProcessFile, todo: list[str], jobs: int | None) -> Iterable[FileResult]:
    """In process for one worker, else on local worker processes (:func:`worker_count`),
    results in completion order.

    The workers start, and files are dispatched, when the iteration starts.
    """
    workers = worker_count(jobs, len(todo))
    if workers == 1:
        return map(process, todo)
    return LocalResults(process, todo, workers)


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
        if context is not None:
            _ensure_forkserver()
        self.executor = ProcessPoolExecutor(
            workers, timeout=WORKER_IDLE, context=context, initializer=_start_worker
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


def _ensure_forkserver() -> None:
    """Start the forkserver from this thread, the driver's main one: the server dies with the
    thread that started it (:mod:`deid.preload`), never with a helper thread."""
    from multiprocessing import forkserver

    forkserver.ensure_running()


def _start_worker() -> None:
    """A local worker's initializer: the driver alone handles Ctrl-C and SIGTERM (it stops the
    workers), and the worker dies with the forkserver that forked it, which dies with the driver."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from deid import preload
    from deid.lifeline import die_with_parent

    die_with_parent(preload.FORKSERVER_PID)


def run_dask(process: ProcessFile, todo: list[str], scheduler: str) -> Iterable[FileResult]:
    """On a Dask cluster: ``tcp://host:8786`` (an existing scheduler) or ``local:N``.

    The cluster starts and every chunk is submitted before this returns; the iterator yields
    results as chunks finish and closes the client (and a local cluster) at its end.

    A worker that dies mid-task is restarted by its nanny and the task runs again elsewhere;
    outputs are written atomically, so a repeat writes the same bytes. A chunk whose worker
    keeps dying is split into single files, and a file that still kills its worker is
    quarantined.

    The workers of a local cluster (no more than the cores and the files) fork from a
    forkserver (where the platform has one) that has imported distributed and deid while this
    process imports distributed; like local workers, they inherit this process's environment
    rather than the nanny's pre-spawn variables.

    Raises
    ------
    WorkerArgumentError
        If ``scheduler`` is neither ``local:N`` nor an address (:func:`parse_scheduler`).
    SchedulerError
        If Dask is not installed, or the scheduler cannot be reached within
        :data:`CONNECT_TIMEOUT` seconds.
    """
    target = parse_scheduler(scheduler)
    local = isinstance(target, int)
    forked = local and _start_forkserver()
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise SchedulerError("--scheduler needs Dask: pip install 'deid-dicom[dask]'") from None

    cluster = None
    if isinstance(target, int):
        method = {"distributed.worker.multiprocessing-method": "forkserver"} if forked else {}
        with dask.config.set({**LOCAL_CLUSTER_CONFIG, **method}):
            cluster = LocalCluster(
                n_workers=worker_count(target, len(todo)),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
    try:
        client = Client(cluster or target, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise SchedulerError(
            f"cannot reach the Dask scheduler at {target} within {CONNECT_TIMEOUT} s ({type(exc).__name__})"
        ) from None
    task = partial(process_chunk, process)
    workers = max(1, sum(client.nthreads().values()))  # those connected yet; more may join
    futures = {client.submit(task, chunk, pure=False): chunk for chunk in chunked(todo, workers, DASK_CHUNK)}
    return DaskResults(client, cluster, task, futures)


def _start_forkserver() -> bool:
    """Start the forkserver of a local cluster's workers, preloading distributed; ``False`` where
    the platform has none."""
    if _forkserver_context(["distributed"]) is None:
        return False
    _ensure_forkserver()
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
