"""benchmarks/train_gpu.sh end to end, on the CPU, with the toy preset and a tiny synthetic set."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the train extra (torch) is not installed")
pytest.importorskip("onnxruntime", reason="the export check needs ONNX Runtime")

pytestmark = pytest.mark.train

REPO = Path(__file__).resolve().parents[1]
FINDINGS = ("No Finding", "Pneumonia (bacterial)", "COVID-19", "Effusion")


def tiny_cxr(root: Path) -> None:
    """A cxr/ folder like $DEID_SHARED/cxr: 64-px PNGs, two sources, two images per patient."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows = []
    for split, patients in (("train", 16), ("val", 8), ("test", 8)):
        for p in range(patients):
            base = rng.random((8, 8))
            for k in range(2):
                image = np.kron(0.7 * base + 0.3 * rng.random((8, 8)), np.ones((8, 8)))
                name = f"images/{split}-{p}-{k}.png"
                Image.fromarray((image * 255).astype(np.uint8)).save(root / name)
                rows.append({"file": name, "split": split, "patient_id": f"s{p % 2}:{split}{p}",
                             "source": f"s{p % 2}", "finding": FINDINGS[(p + k) % len(FINDINGS)]})
    with open(root / "images.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_gpu_script_trains_exports_and_evaluates_at_toy_size(tmp_path):
    tiny_cxr(tmp_path / "shared" / "cxr")
    work = tmp_path / "work"
    env = {**os.environ, "PRESET": "toy", "DEVICE": "cpu", "TRAIN_MINUTES": "0.01", "RUNS": "1",
           "DEID_SHARED": str(tmp_path / "shared"), "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "train_gpu.sh"), str(work)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "max-attacker re-ID, weighted" in done.stdout and "device cpu, preset toy" in done.stdout
    metadata = json.loads((work / "deform.json").read_text())
    assert metadata["name"] == "toy-light-linkage-mu0.15-i0.15" and metadata["intensity"] == 0.15
    assert metadata["privacy"]["runs"] == 1 and isinstance(metadata["privacy"]["milestone"], bool)
    assert max(metadata["parity"].values()) <= 1e-4
    evaluation = json.loads((work / f"eval-{metadata['name']}.json").read_text())
    assert evaluation["steps"] >= 40 and len(evaluation["curve"]) >= 2
