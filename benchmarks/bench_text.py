"""Throughput of the burned-in text stage: 2048x2048 radiographs and a multi-frame ultrasound clip.

Usage::

    python benchmarks/bench_text.py [--images 5] [--frames 60] [--baseline SRC [--rounds 4]]
        [--record benchmarks/RESULTS.md]

Each object goes through the text stage alone (in one process, one ONNX Runtime thread), after
one warm-up; the table gives seconds per object (wall, and CPU time of every thread of the
process: what one core would spend), the share spent in OCR, and the time the worker then spends
on the review page's two pictures (:func:`deid.review.preview_of`). The radiographs carry a
48-pixel line and four small ones (glyphs of 8-9 pixels); each is timed twice in turn, with the
first read alone and with the second read of small text, so that both figures see the same load.

``--baseline SRC`` compares the whole stage (both reads) of another source tree of deid (an
earlier commit, e.g. from ``git archive``, with ``deid/_rules`` and ``deid/_models`` linked to its
``rules/`` and ``models/``) with this checkout's, side by side: each tree runs in a fresh process
(``PYTHONPATH``) on the same radiographs, the trees alternate for ``--rounds`` rounds, and each
round gives the median CPU seconds per radiograph of both and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage

import record
from deid.pixels import ocr, small_text, text
from deid.review import preview_of
from deid.stage import Instance

#: Small lines (text, position, glyph size) that only the second read finds.
SMALL_LINES = [
    ("ID 12345678 03/02/2017", (1500, 60), 8),
    ("SMITH JANE DOB 1931-02-14", (60, 1980), 9),
    ("ACC 99887766", (1600, 1960), 8),
    ("ST MARY HOSPITAL", (900, 30), 9),
]


def radiograph(seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:2048, 0:2048]
    pixels = (np.exp(-(((x - 1024) / 700) ** 2 + ((y - 1024) / 800) ** 2)) * 3000 + rng.normal(0, 60, x.shape))
    image = Image.fromarray(np.zeros((2048, 2048), np.uint8))
    pen = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=48)
    pen.text((40, 40), "DOE JOHN 01.09.2012 MRN445566", fill=255, font=font)
    for line, position, size in SMALL_LINES:
        pen.text(position, line, fill=255, font=ImageFont.load_default(size=size))
    pixels[np.asarray(image) > 0] = 4095
    return dataset(ComputedRadiographyImageStorage, "CR", np.clip(pixels, 0, 4095).astype(np.uint16), "MONOCHROME2", 12)


def clip(frames: int) -> Dataset:
    rng = np.random.default_rng(7)
    base = rng.integers(0, 120, (480, 640), dtype=np.uint8)
    image = Image.fromarray(base)
    ImageDraw.Draw(image).text((10, 8), "DOE JOHN 445566 03/02/2017", fill=255, font=ImageFont.load_default(size=20))
    still = np.asarray(image)
    cine = np.stack([np.roll(still, shift=(0, 0)) for _ in range(frames)])
    cine[:, 100:400, 100:500] = rng.integers(0, 200, (frames, 300, 400), dtype=np.uint8)  # moving anatomy
    rgb = np.repeat(cine[..., None], 3, axis=3)
    ds = dataset(UltrasoundMultiFrameImageStorage, "US", rgb, "RGB", 8)
    ds.NumberOfFrames = frames
    return ds


def dataset(sop_class: str, modality: str, pixels: np.ndarray, photometric: str, bits: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, "1.2.3.4", modality
    ds.BurnedInAnnotation = "YES"
    ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=bits, generate_instance_uid=False)
    return ds


def measure(make, count: int) -> tuple[float, float, float, float]:
    """Median wall and CPU seconds per object, the median share of wall time spent in OCR, and the
    median seconds of the review pictures made after it."""
    return measure_pairs(make, count, (True,))[True]


def measure_pairs(make, count: int, settings: tuple[bool, ...]) -> dict[bool, tuple[float, float, float, float]]:
    """:func:`measure` without (``False``) and with (``True``) the second read, object by object in turn."""
    stage = text.TextStage()
    first, second = ocr.read_text, small_text.read_small_text
    spent = [0.0]

    def counted(function):
        def timed(*args):
            start = time.perf_counter()
            try:
                return function(*args)
            finally:
                spent[0] += time.perf_counter() - start

        return timed

    text.read_text = counted(first)
    rows: dict[bool, list[tuple[float, float, float, float]]] = {setting: [] for setting in settings}
    try:
        for i in range(count + 1):
            for setting in settings:
                text.read_small_text = counted(second) if setting else (lambda picture, found: [])
                item = Instance(make(i))
                spent[0] = 0.0
                start, cpu = time.perf_counter(), time.process_time()
                stage(item)
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu
                start = time.perf_counter()
                assert preview_of(item, "x", 0.0) is not None
                if i:  # the first one warms the engine up
                    rows[setting].append((wall, cpu, spent[0] / wall, time.perf_counter() - start))
    finally:
        text.read_text, text.read_small_text = first, second
    return {
        setting: (
            statistics.median(r[0] for r in timings), statistics.median(r[1] for r in timings),
            statistics.median(r[2] for r in timings), statistics.median(r[3] for r in timings),
        )
        for setting, timings in rows.items()
    }


def stage_cpu(count: int) -> float:
    """Median CPU seconds of the text stage (both reads) per radiograph, after one warm-up, in the
    deid this process imports."""
    stage, times = text.TextStage(), []
    for i in range(count + 1):
        item = Instance(radiograph(i))
        cpu = time.process_time()
        stage(item)
        if i:
            times.append(time.process_time() - cpu)
    return statistics.median(times)


def side_by_side(baseline: Path, count: int, rounds: int) -> str:
    """The table of :func:`stage_cpu` for ``baseline`` and this checkout, the trees alternating."""
    here = Path(__file__).resolve().parent.parent
    lines = [
        f"| round | before (tree {baseline.name}), CPU s | after (this checkout), CPU s | after/before |",
        "|---|---|---|---|",
    ]
    for round_number in range(1, rounds + 1):
        figures = []
        for tree in (baseline.resolve(), here):
            child = subprocess.run(
                [sys.executable, __file__, "--stage-cpu", str(count)], cwd=tree, check=True, capture_output=True,
                text=True, env={**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"},
            )
            figures.append(json.loads(child.stdout.splitlines()[-1]))
        lines.append(f"| {round_number} | {figures[0]:.3f} | {figures[1]:.3f} | {figures[1] / figures[0]:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--baseline", type=Path, help="another source tree of deid to compare the stage with")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--stage-cpu", type=int, help=argparse.SUPPRESS)  # a child of --baseline
    parser.add_argument("--record", type=Path)
    args = parser.parse_args()
    if args.stage_cpu:
        print(json.dumps(stage_cpu(args.stage_cpu)))
        return
    if args.baseline:
        table = side_by_side(args.baseline, args.images, args.rounds)
        print(table)
        if args.record:
            record.append(args.record, "Burned-in text stage, before and after", table, "one ONNX Runtime thread")
        return
    pairs = measure_pairs(radiograph, args.images, (False, True))
    (before, before_cpu, before_share, _), (after, after_cpu, after_share, single_pictures) = pairs[False], pairs[True]
    cine, _, cine_share, cine_pictures = measure(lambda _: clip(args.frames), 2)
    one_frame, _, _, frame_pictures = measure(lambda _: clip(1), 2)
    lines = [
        "| object | s per object | CPU s per object | OCR share | review pictures, s | |",
        "|---|---|---|---|---|---|",
        f"| CR 2048x2048, 12-bit, a 48-px line and 4 small ones, first read only (before) | {before:.2f} "
        f"| {before_cpu:.2f} | {before_share:.0%} | | |",
        f"| same, first read and second read of small text (after) | {after:.2f} | {after_cpu:.2f} "
        f"| {after_share:.0%} | {single_pictures:.3f} "
        f"| target <= 1 s; after/before {after_cpu / before_cpu:.2f} (CPU) |",
        f"| US clip 480x640 RGB, {args.frames} frames | {cine:.2f} | | {cine_share:.0%} | {cine_pictures:.3f} "
        f"| {cine / one_frame:.1f} single-frame reads (target <= 3) |",
        f"| US single frame 480x640 RGB | {one_frame:.2f} | | | {frame_pictures:.3f} | |",
    ]
    text_out = "\n".join(lines)
    print(text_out)
    if args.record:
        record.append(args.record, "Burned-in text stage", text_out, "one ONNX Runtime thread")


if __name__ == "__main__":
    main()
