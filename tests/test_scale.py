"""Scale-out: local workers and a Dask cluster whose worker is killed mid-run give the single-process
result; a file that kills its worker every time is quarantined."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from conftest import KEY
from deid.executors import run_local
from deid.pipeline import FileTask, RunConfig, discover, run
from deid.staging import STAGING
from test_pipeline import make_inputs, tree_digest


class KillsItsWorker:
    """The per-file work, except that the worker processing ``victim`` is killed (SIGKILL, as the
    OOM killer does): every time, or only the first time when ``once`` names a marker file."""

    def __init__(self, task: FileTask, victim: str, once: Path | None = None) -> None:
        self.task, self.victim, self.once = task, victim, once

    def __call__(self, src: str):
        if src == self.victim and not (self.once and self.once.exists()):
            if self.once:
                self.once.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.task(src)


def _outcomes(results) -> dict[str, tuple]:
    outcomes = {}
    for r in results:
        assert r.src not in outcomes, f"{r.src} reported twice"
        outcomes[r.src] = (r.status, r.dst, r.sha256, r.reason)
    return outcomes


@pytest.fixture
def local_inputs(tmp_path: Path) -> tuple[Path, list[str], dict[str, tuple]]:
    """100 DICOM inputs and a text file, and their outcomes in a single process."""
    inputs = tmp_path / "in"
    make_inputs(inputs, patients=5, slices=20)
    todo = discover(inputs)
    reference = _outcomes(map(FileTask(RunConfig("basic", (), KEY), inputs, tmp_path / "ref"), todo))
    return inputs, todo, reference


@pytest.mark.slow
def test_killed_local_worker_loses_nothing(local_inputs, tmp_path: Path):
    inputs, todo, reference = local_inputs
    task = FileTask(RunConfig("basic", (), KEY), inputs, tmp_path / "out")
    killer = KillsItsWorker(task, todo[50], once=tmp_path / "killed")
    assert _outcomes(run_local(killer, todo, 2)) == reference
    assert (tmp_path / "killed").exists()
    # loky ends the other worker too, perhaps mid-write: its half file stays in the staging
    # folder, which every run clears, and never reaches the release.
    released = {path: digest for path, digest in tree_digest(tmp_path / "out").items()
                if not path.startswith(f"{STAGING}/")}
    assert released == tree_digest(tmp_path / "ref")


@pytest.mark.slow
def test_file_that_kills_its_worker_is_quarantined(local_inputs, tmp_path: Path):
    inputs, todo, reference = local_inputs
    task = FileTask(RunConfig("basic", (), KEY), inputs, tmp_path / "out")
    outcomes = _outcomes(run_local(KillsItsWorker(task, todo[50]), todo, 2))
    assert outcomes.pop(todo[50]) == ("quarantined", "", "", "the worker process died on this file")
    assert outcomes == {src: outcome for src, outcome in reference.items() if src != todo[50]}


@pytest.fixture
def distributed():
    return pytest.importorskip("distributed", reason="the dask extra is not installed")


@pytest.mark.slow
def test_killed_dask_worker_loses_nothing(distributed, tmp_path: Path):
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
    import gc

    import dask

    from deid.audit import FileResult

    trim = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    profile = dask.config.get("distributed.worker.profile.enabled")
    frozen = gc.get_freeze_count() > 0  # forked from the forkserver, after deid.preload
    return FileResult(src=src, status="skipped", reason=f"{trim} {profile} {frozen}")


def test_local_cluster_workers_run_without_trim_threshold_or_profiler(distributed, monkeypatch):
    from deid.executors import run_dask

    # a nanny leaves its pre-spawn variables in this process's environment (the test above)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)

    results = list(run_dask(_worker_settings, ["a", "b"], "local:1"))
    assert [(r.src, r.reason) for r in results] == [("a", "None False True"), ("b", "None False True")]
