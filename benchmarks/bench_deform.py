"""Throughput of the deformation stage (a learned generator or a keyed random transform) on 2048x2500 chest radiographs.

Usage::

    python benchmarks/bench_deform.py [--images 6] [--model models/deform.onnx] [--record benchmarks/RESULTS.md]

Each object is a 12-bit MONOCHROME2 CR (the real 2500x2048 radiograph of ``$DEID_SHARED/cxr/fullres``
when present, turned to 2048 rows x 2500 columns; a synthetic one otherwise). The stage runs alone,
after one warm-up: first in this process (one ONNX Runtime thread, as in ``deid run``), giving the
seconds per object and the share spent in the ONNX graph; then in two worker processes at once, as
``deid run -j 2`` does on two cores, giving images per second. The device is ONNX Runtime's provider.
A keyed model draws its noise from a fixed benchmark key, as ``deid run`` does from the run's key.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian

import record
from deid.pixels.deform import DeformStage
from deid.pseudonyms import Pseudonymizer
from deid.stage import Instance

SHARED_IMAGE = "cxr/fullres/covid__covid-19-pneumonia-35-1.jpg"
KEY = Pseudonymizer(b"deid benchmark key, not secret")


def pixels() -> tuple[np.ndarray, str]:
    path = Path(os.environ.get("DEID_SHARED", Path(__file__).resolve().parents[2] / "shared")) / SHARED_IMAGE
    if path.is_file():
        from PIL import Image

        grey = np.asarray(Image.open(path).convert("L"), dtype=np.uint16)
        return (grey.T if grey.shape[0] > grey.shape[1] else grey)[:2048, :2500] * 16, "real radiograph"
    y, x = np.mgrid[0:2048, 0:2500]
    body = np.exp(-(((x - 1250) / 800) ** 2 + ((y - 1024) / 850) ** 2)) * 3000
    return np.clip(body + np.random.default_rng(0).normal(0, 60, x.shape), 0, 4095).astype(np.uint16), "synthetic"


def radiograph(stored: np.ndarray, i: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = ComputedRadiographyImageStorage, f"1.2.826.0.1.3680043.8.498.{i + 1}"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition, ds.ImageType = "CR", "CHEST", "PA", ["ORIGINAL", "PRIMARY"]
    ds.set_pixel_data(stored, photometric_interpretation="MONOCHROME2", bits_stored=12, generate_instance_uid=False)
    return ds


def measure(model: Path | None, count: int) -> tuple[float, float, str]:
    """Median seconds per object, the median share in the ONNX graph, and the provider."""
    stage = DeformStage(model, pseudo=KEY)
    stored, _ = pixels()
    run, spent = stage.session.run, []

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return run(*args, **kwargs)
        finally:
            spent[-1] += time.perf_counter() - start

    stage.session.run = timed
    totals = []
    for i in range(count + 1):
        item = Instance(radiograph(stored, i))
        spent.append(0.0)
        start = time.perf_counter()
        stage(item)
        totals.append(time.perf_counter() - start)
    totals, spent = totals[1:], spent[1:]  # the first one warms the session up
    shares = (s / t for s, t in zip(spent, totals, strict=True))
    return statistics.median(totals), statistics.median(shares), stage.provider


def _worker(model: Path | None, count: int) -> float:
    return measure(model, count)[0] * count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--record", type=Path)
    args = parser.parse_args()
    seconds, share, provider = measure(args.model, args.images)
    with ProcessPoolExecutor(2) as pool:
        start = time.perf_counter()
        list(pool.map(_worker, [args.model] * 2, [args.images] * 2))
        wall = time.perf_counter() - start
    parallel = 2 * (args.images + 1) / wall  # every object, warm-ups included, over the wall time
    stage = DeformStage(args.model, pseudo=KEY)
    lines = [
        f"model {stage.model.name} ({stage.model.settings()}); "
        f"{pixels()[1]} 2048x2500, 12-bit; provider {provider}",
        "",
        "| run | s per radiograph | images/s | ONNX share | |",
        "|---|---|---|---|---|",
        f"| 1 process, 1 ORT thread | {seconds:.3f} | {1 / seconds:.2f} | {share:.0%} | |",
        f"| 2 processes at once (as deid run -j 2) | {1 / parallel:.3f} | {parallel:.2f} | | "
        "target < 0.5 s per radiograph on 2 cores |",
    ]
    text_out = "\n".join(lines)
    print(text_out)
    if args.record:
        record.append(args.record, "Deformation stage", text_out)


if __name__ == "__main__":
    main()
