"""Throughput of the burned-in text stage: 2048x2048 radiographs and a multi-frame ultrasound clip.

Usage::

    python benchmarks/bench_text.py [--images 5] [--frames 60] [--record benchmarks/RESULTS.md]

Each object goes through the text stage alone (in one process, one ONNX Runtime thread), after
one warm-up; the table gives seconds per object, the share spent in the OCR detector, and the time
the worker then spends on the review page's two pictures (:func:`deid.review.preview_of`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage

import record
from deid.pixels import ocr, text
from deid.review import preview_of
from deid.stage import Item


def radiograph(seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:2048, 0:2048]
    pixels = (np.exp(-(((x - 1024) / 700) ** 2 + ((y - 1024) / 800) ** 2)) * 3000 + rng.normal(0, 60, x.shape))
    image = Image.fromarray(np.zeros((2048, 2048), np.uint8))
    font = ImageFont.load_default(size=48)
    ImageDraw.Draw(image).text((40, 40), "DOE JOHN 01.09.2012 MRN445566", fill=255, font=font)
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


def measure(make, count: int) -> tuple[float, float, float]:
    """Median seconds per object, the median share of it spent in OCR, and the median seconds of
    the review pictures made after it."""
    stage = text.TextStage()
    spent = []
    original = ocr.read_text

    def counted(picture):
        start = time.perf_counter()
        try:
            return original(picture)
        finally:
            spent[-1] += time.perf_counter() - start

    text.read_text = counted
    totals, pictures = [], []
    for i in range(count + 1):
        item = Item(make(i))
        spent.append(0.0)
        start = time.perf_counter()
        stage(item)
        totals.append(time.perf_counter() - start)
        start = time.perf_counter()
        assert preview_of(item, "x", 0.0) is not None
        pictures.append(time.perf_counter() - start)
    text.read_text = original
    totals, spent, pictures = totals[1:], spent[1:], pictures[1:]  # the first one warms the engine up
    shares = (s / t for s, t in zip(spent, totals, strict=True))
    return statistics.median(totals), statistics.median(shares), statistics.median(pictures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--record", type=Path)
    args = parser.parse_args()
    single, single_share, single_pictures = measure(radiograph, args.images)
    cine, cine_share, cine_pictures = measure(lambda _: clip(args.frames), 2)
    one_frame, _, frame_pictures = measure(lambda _: clip(1), 2)
    lines = [
        "| object | s per object | OCR share | review pictures, s | |",
        "|---|---|---|---|---|",
        f"| CR 2048x2048, 12-bit, text burned in | {single:.2f} | {single_share:.0%} | {single_pictures:.3f} "
        "| target <= 1 s |",
        f"| US clip 480x640 RGB, {args.frames} frames | {cine:.2f} | {cine_share:.0%} | {cine_pictures:.3f} "
        f"| {cine / one_frame:.1f} single-frame reads (target <= 3) |",
        f"| US single frame 480x640 RGB | {one_frame:.2f} | | {frame_pictures:.3f} | |",
    ]
    text_out = "\n".join(lines)
    print(text_out)
    if args.record:
        record.append(args.record, "Burned-in text stage", text_out, "one ONNX Runtime thread")


if __name__ == "__main__":
    main()
