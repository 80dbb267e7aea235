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

ProcessFile = Callable[[str], FileResult]


def process_chunk(process: ProcessFile, sources: list[str]) -> list[FileResult]:
    """Process a chunk of files in one task."""
    return [process(src) for src in sources]


def run_local(process: ProcessFile, todo: list[str], jobs: int) -> Iterator[FileResult]:
    """In process for one job, else joblib's loky workers, results in completion order."""
    if jobs == 1:
        yield from map(process, todo)
        return
    from joblib import Parallel, delayed

    yield from Parallel(n_jobs=jobs, return_as="generator_unordered", batch_size="auto")(
        delayed(process)(src) for src in todo
    )


def run_dask(process: ProcessFile, todo: list[str], scheduler: str) -> Iterator[FileResult]:
    """On a Dask cluster: ``tcp://host:8786`` (an existing scheduler) or ``local:N``.

    A worker that dies mid-task is restarted by its nanny and the task runs again elsewhere;
    outputs are written atomically, so a repeat writes the same bytes. A chunk whose worker
    keeps dying is split into single files, and a file that still kills its worker is
    quarantined.
    """
    import dask
    from distributed import Client, LocalCluster, as_completed
    from distributed.scheduler import KilledWorker

    cluster = None
    if scheduler.startswith("local:"):
        with dask.config.set({NANNY_MALLOC_TRIM: None}):
            cluster = LocalCluster(
                n_workers=int(scheduler.removeprefix("local:")),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
    with Client(cluster or scheduler) as client:
        chunks = [todo[i : i + DASK_CHUNK] for i in range(0, len(todo), DASK_CHUNK)]
        task = partial(process_chunk, process)
        futures = {client.submit(task, chunk, pure=False): chunk for chunk in chunks}
        pending = as_completed(futures)
        for future in pending:
            chunk = futures.pop(future)
            try:
                yield from future.result()
            except KilledWorker:
                if len(chunk) == 1:
                    yield _worker_died(chunk[0])
                    continue
                for src in chunk:
                    single = client.submit(task, [src], pure=False)
                    futures[single] = [src]
                    pending.add(single)
    if cluster is not None:
        cluster.close()


def _worker_died(src: str) -> FileResult:
    return FileResult(src=src, status="quarantined", reason="the worker process died on this file")
