"""Scale-out: a Dask cluster whose worker is killed mid-run gives the single-process result."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from conftest import KEY
from deid.pipeline import RunConfig, run
from deid.staging import STAGING
from test_pipeline import make_inputs, tree_digest

distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")


def test_killed_dask_worker_loses_nothing(tmp_path: Path):
    inputs = tmp_path / "in"
    make_inputs(inputs, patients=10, slices=40)
    config = RunConfig("research", (), KEY)
    run(config, inputs, tmp_path / "ref", jobs=1)

    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    killed: list[int] = []

    def kill_one_worker() -> None:
        with distributed.Client(cluster) as client:
            pids = client.run(os.getpid)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if len(list((tmp_path / "out").rglob("*.dcm"))) >= 40:
                    pid = next(iter(pids.values()))
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
                time.sleep(0.01)

    killer = threading.Thread(target=kill_one_worker)
    try:
        killer.start()
        summary = run(config, inputs, tmp_path / "out", scheduler=cluster.scheduler_address)
        killer.join()
    finally:
        cluster.close()
    assert killed, "a worker must be killed during the run"
    assert summary.counts == {"written": 400, "quarantined": 0, "skipped": 1}
    assert tree_digest(tmp_path / "out") == tree_digest(tmp_path / "ref")
    assert not (tmp_path / "out" / STAGING).exists()


def _worker_settings(src: str):
    import dask

    from deid.audit import FileResult

    trim = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    profile = dask.config.get("distributed.worker.profile.enabled")
    return FileResult(src=src, status="skipped", reason=f"{trim} {profile}")


def test_local_cluster_workers_run_without_trim_threshold_or_profiler(monkeypatch: pytest.MonkeyPatch):
    from deid.executors import run_dask

    # a nanny leaves its pre-spawn variables in this process's environment (the test above)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)

    results = list(run_dask(_worker_settings, ["a", "b"], "local:1"))
    assert [(r.src, r.reason) for r in results] == [("a", "None False"), ("b", "None False")]
