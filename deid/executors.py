"""Where the per-file work runs: in process, on local joblib workers, or on a Dask cluster.

Every executor yields :class:`~deid.audit.FileResult` objects as files finish, so the driver
keeps the ledger, the manifest and the progress bar exact. Workers build their stages once per
process (:func:`deid.process.worker_for`), never per file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

from deid.audit import FileResult

#: Files per Dask task: amortises the scheduler's per-task cost (about 20 ms); a killed worker
#: costs at most one chunk of repeated work.
DASK_CHUNK = 32

#: The nanny starts workers with a fixed malloc trim threshold, which makes glibc map and unmap
#: every pixel buffer afresh: about 20 % more CPU per file here. Local clusters start without it;
#: the README says how to do the same on a cluster's workers.
NANNY_MALLOC_TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"

#: Each worker samples its task thread's stack every 10 ms for the dashboard's profile, which a
#: local cluster (started without a dashboard) never shows: about 7 % of the run's wall time here.
WORKER_PROFILE = "distributed.worker.profile.enabled"

ProcessFile = Callable[[str], FileResult]


def process_chunk(process: ProcessFile, sources: list[str]) -> list[FileResult]:
    """Process a chunk of files in one task."""
    return [process(src) for src in sources]


def run_local(process: ProcessFile, todo: list[str], jobs: int) -> Iterator[FileResult]:
    """In process for one job, else joblib's loky workers, results in completion order.

    The workers start, and files are dispatched, as soon as this returns.
    """
    if jobs == 1:
        return map(process, todo)
    from joblib import Parallel, delayed

    return Parallel(n_jobs=jobs, return_as="generator_unordered", batch_size="auto")(
        delayed(process)(src) for src in todo
    )


def run_dask(process: ProcessFile, todo: list[str], scheduler: str) -> Iterator[FileResult]:
    """On a Dask cluster: ``tcp://host:8786`` (an existing scheduler) or ``local:N``.

    The cluster starts and every chunk is submitted before this returns; the iterator yields
    results as chunks finish and closes the client (and a local cluster) at its end.

    A worker that dies mid-task is restarted by its nanny and the task runs again elsewhere;
    outputs are written atomically, so a repeat writes the same bytes. A chunk whose worker
    keeps dying is split into single files, and a file that still kills its worker is
    quarantined.
    """
    import dask
    from distributed import Client, LocalCluster

    cluster = None
    if scheduler.startswith("local:"):
        with dask.config.set({NANNY_MALLOC_TRIM: None, WORKER_PROFILE: False}):
            cluster = LocalCluster(
                n_workers=int(scheduler.removeprefix("local:")),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
    client = Client(cluster or scheduler)
    task = partial(process_chunk, process)
    chunks = [todo[i : i + DASK_CHUNK] for i in range(0, len(todo), DASK_CHUNK)]
    futures = {client.submit(task, chunk, pure=False): chunk for chunk in chunks}
    return DaskResults(client, cluster, task, futures)


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
