"""A second read for text too small for the first: full-resolution windows around text-like marks.

The first read (:func:`deid.pixels.ocr.read_text`) sees a copy whose long side is 1 024 pixels, so
on a 2 048-pixel radiograph text 10-12 pixels high shrinks to 5-6 pixels, below what the
detector finds. Here a morphological filter on that same half-size copy marks strokes thinner
than :data:`STROKE` pixels that stand out by :data:`CONTRAST` grey levels (top-hat and black-hat,
so bright and dark text alike), joins them into words, and keeps marks of small-text height that
no first-read line covers. Full-resolution windows around them are packed into one near-square
mosaic, enlarged :data:`ENLARGE` times and read once; what the recogniser accepts comes back in
full-resolution coordinates.
"""

from __future__ import annotations

import threading

import numpy as np

from deid.pixels.ocr import PAD, READ_SIDE, TextLine, accepted, engine
from deid.pixels.regions import Box

#: Pictures whose long side is at least this get the second read (the first shrank them 1.5x or more).
MIN_LONG_SIDE = READ_SIDE * 3 // 2
#: Strokes thinner than this (pixels of the first read's copy) are kept by the top-hat and black-hat.
STROKE = 5
#: How far (grey levels of the 8-bit copy) a stroke stands out from its surroundings.
CONTRAST = 40
#: Heights (pixels of the first read's copy) of the marks read again: the first read finds taller text.
MARK_HEIGHTS = (2, 13)
#: Margins (full-resolution pixels) of a window around a mark: the rest of a line, and the room
#: the detector needs.
MARGIN_X, MARGIN_Y = 32, 10
#: The mosaic of windows is read this many times larger (small glyphs become detector-sized).
ENLARGE = 2
#: At most this many full-resolution pixels are read again per picture: marks nearest the edges
#: first, where annotations are written.
MAX_AREA = 256 * 1024
_GAP = 24
#: The mosaic is read with the detector's resizing turned off; threads of one process wait.
_DETECTOR = threading.Lock()


def marks(picture: np.ndarray, covered: list[Box]) -> list[Box]:
    """Full-resolution boxes of small text-like marks in a uint8 picture (grey or RGB) that no
    ``covered`` box holds, found on the first read's copy."""
    import cv2

    rows, columns = picture.shape[:2]
    scale = READ_SIDE / max(rows, columns)
    small = cv2.resize(picture, (round(columns * scale), round(rows * scale)), interpolation=cv2.INTER_AREA)
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (STROKE, STROKE))
    strokes = np.maximum(
        cv2.morphologyEx(small, cv2.MORPH_TOPHAT, kernel), cv2.morphologyEx(small, cv2.MORPH_BLACKHAT, kernel)
    )
    binary = (strokes >= CONTRAST).astype(np.uint8)
    words = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (5, 1)))
    count, _, stats, _ = cv2.connectedComponentsWithStats(words, connectivity=8)
    found = []
    for x, y, width, height, _ in stats[1:count]:
        if not MARK_HEIGHTS[0] <= height <= MARK_HEIGHTS[1] or width < 2:
            continue
        box = (int(x / scale), int(y / scale), int(np.ceil(width / scale)), int(np.ceil(height / scale)))
        if not any(_inside(box, line) for line in covered):
            found.append(box)
    return found


def _inside(inner: Box, outer: Box) -> bool:
    x, y, w, h = inner
    ox, oy, ow, oh = outer
    return ox <= x and oy <= y and x + w <= ox + ow and y + h <= oy + oh


def windows(found: list[Box], rows: int, columns: int) -> list[Box]:
    """Windows around ``found`` marks (merged where they overlap), nearest the edges first, up to
    :data:`MAX_AREA` pixels in all."""
    boxes = []
    for x, y, w, h in found:
        x0, y0 = max(0, x - MARGIN_X), max(0, y - MARGIN_Y)
        x1, y1 = min(columns, x + w + MARGIN_X), min(rows, y + h + MARGIN_Y)
        boxes.append([x0, y0, x1, y1])
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]:
                    boxes[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break

    def edge_distance(box: list[int]) -> int:
        return min(box[0], box[1], columns - box[2], rows - box[3])

    chosen, area = [], 0
    for x0, y0, x1, y1 in sorted(boxes, key=edge_distance):
        if area + (x1 - x0) * (y1 - y0) > MAX_AREA:
            break
        chosen.append((x0, y0, x1 - x0, y1 - y0))
        area += (x1 - x0) * (y1 - y0)
    return chosen


def _mosaic(picture: np.ndarray, chosen: list[Box]) -> tuple[np.ndarray, list[tuple[Box, int, int]]]:
    """The windows packed on shelves into one near-square picture (the detector pads a wide one
    to a square), with where each went (its box, left, top)."""
    width = max(max(box[2] for box in chosen), int(np.sqrt(sum(box[2] * box[3] for box in chosen))))
    placed, left, top, shelf = [], _GAP, _GAP, 0
    for box in sorted(chosen, key=lambda box: -box[3]):
        if left > _GAP and left + box[2] > width + _GAP:
            left, top, shelf = _GAP, top + shelf + _GAP, 0
        placed.append((box, left, top))
        left += box[2] + _GAP
        shelf = max(shelf, box[3])
    crops = [picture[y : y + h, x : x + w] for x, y, w, h in chosen]
    background = np.median(np.concatenate([crop.reshape(-1, *picture.shape[2:]) for crop in crops]), axis=0)
    mosaic = np.empty((top + shelf + _GAP, width + 2 * _GAP, *picture.shape[2:]), np.uint8)
    mosaic[:] = background.astype(np.uint8)  # no edges of its own around the windows
    for (x, y, w, h), left, top in placed:
        mosaic[top : top + h, left : left + w] = picture[y : y + h, x : x + w]
    return mosaic, placed


def read_small_text(picture: np.ndarray, first: list[TextLine]) -> list[TextLine]:
    """Text lines too small for the first read of ``picture`` (a uint8 image, grey or RGB), in
    full-resolution coordinates, padded by :data:`~deid.pixels.ocr.PAD` pixels."""
    import cv2

    rows, columns = picture.shape[:2]
    if max(rows, columns) < MIN_LONG_SIDE:
        return []
    chosen = windows(marks(picture, [line.box for line in first]), rows, columns)
    if not chosen:
        return []
    mosaic, placed = _mosaic(picture, chosen)
    large = cv2.resize(mosaic, None, fx=ENLARGE, fy=ENLARGE, interpolation=cv2.INTER_CUBIC)
    ocr = engine()
    with _DETECTOR:
        detector = ocr._load_det_model()
        saved = detector.limit_type, detector.limit_side_len
        detector.limit_type, detector.limit_side_len = "max", max(large.shape[:2])  # read as it is
        try:
            result = ocr(large)
        finally:
            detector.limit_type, detector.limit_side_len = saved
    lines = []
    for xs, ys, text, score in accepted(result, ENLARGE):
        centre_x, centre_y = xs.mean(), ys.mean()
        for (x, y, width, height), left, top in placed:
            if left <= centre_x < left + width and top <= centre_y < top + height:
                # back to the picture, kept within the window the line was read in
                x0 = max(x, int(xs.min()) - left + x) - PAD
                y0 = max(y, int(ys.min()) - top + y) - PAD
                x1 = min(x + width, int(np.ceil(xs.max())) - left + x) + PAD
                y1 = min(y + height, int(np.ceil(ys.max())) - top + y) + PAD
                x0, y0, x1, y1 = max(0, x0), max(0, y0), min(columns, x1), min(rows, y1)
                lines.append(TextLine((x0, y0, x1 - x0, y1 - y0), text, score))
                break
    return lines
