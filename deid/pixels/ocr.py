"""Layer 2 of burned-in text detection: RapidOCR (PaddleOCR det/rec ONNX models that ship in
its wheel) on onnxruntime, one engine per worker process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from deid.pixels.regions import Box

#: Detectors read a copy whose long side is about this many pixels.
READ_SIDE = 1024
#: Lines recognised with a lower score are ignored (anatomy read as text).
MIN_SCORE = 0.5
#: Boxes grow by this many full-resolution pixels on every side.
PAD = 4

_ENGINE = None
_LOCK = threading.Lock()


@dataclass(frozen=True)
class TextLine:
    """One line of text found in a picture, in full-resolution coordinates."""

    box: Box
    text: str
    score: float


def engine():
    """The process's RapidOCR engine, built on first use (bundled models, no download)."""
    global _ENGINE
    with _LOCK:
        if _ENGINE is None:
            from rapidocr import RapidOCR

            _ENGINE = RapidOCR(
                params={
                    "Global.log_level": "error",
                    "Global.use_cls": False,
                    "EngineConfig.onnxruntime.intra_op_num_threads": 1,
                    "EngineConfig.onnxruntime.inter_op_num_threads": 1,
                    # one line per recognition: a batch pads every line to the widest one's width
                    "Rec.rec_batch_num": 1,
                }
            )
        return _ENGINE


def read_text(picture: np.ndarray) -> list[TextLine]:
    """Find text lines in a uint8 picture, grey (rows, columns) or RGB.

    The picture is read at a long side of :data:`READ_SIDE` pixels; boxes are mapped back
    to full resolution and padded by :data:`PAD` pixels.
    """
    import cv2

    rows, columns = picture.shape[:2]
    scale = min(1.0, READ_SIDE / max(rows, columns))
    small = (
        cv2.resize(picture, (round(columns * scale), round(rows * scale)), interpolation=cv2.INTER_AREA)
        if scale < 1.0
        else picture
    )
    lines = []
    for xs, ys, text, score in accepted(engine()(small), scale):
        x0, y0 = max(0, int(xs.min()) - PAD), max(0, int(ys.min()) - PAD)
        x1, y1 = min(columns, int(np.ceil(xs.max())) + PAD), min(rows, int(np.ceil(ys.max())) + PAD)
        lines.append(TextLine((x0, y0, x1 - x0, y1 - y0), text, score))
    return lines


def accepted(result: Any, scale: float) -> Iterator[tuple[np.ndarray, np.ndarray, str, float]]:
    """The lines of a RapidOCR result that the recogniser accepts (score at least
    :data:`MIN_SCORE`): the x and y of their corners divided by ``scale``, their text and score."""
    if result.boxes is None:
        return
    for points, text, score in zip(result.boxes, result.txts, result.scores, strict=True):
        if score >= MIN_SCORE:
            corners = np.asarray(points)
            yield corners[:, 0] / scale, corners[:, 1] / scale, str(text), float(score)
