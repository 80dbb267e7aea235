"""The burned-in text stage: find text in the pixels and blank it in every frame.

Detection is layered: regions known from header values and the outside of declared ultrasound
regions (:mod:`deid.pixels.regions`), then OCR of what is left (:mod:`deid.pixels.ocr`), and a
second read of small text at full resolution (:mod:`deid.pixels.small_text`). A multi-frame
object is read twice, as the minimum and the maximum over its frames. In ``all`` mode every text
line is blanked; in ``sensitive`` mode lines made only of safe tokens (laterality, positioning,
units, measurements) are kept.
"""

from __future__ import annotations

import importlib.util
import re

import numpy as np
from pydicom.dataset import Dataset

from deid.gate import may_carry_text
from deid.pixels.codecs import pixel_array
from deid.pixels.encode import write_pixels
from deid.pixels.ocr import read_text
from deid.pixels.regions import Box, RegionRules, load_region_rules
from deid.pixels.render import fill_value, frames_of, to_display
from deid.pixels.small_text import read_small_text
from deid.stage import Instance, Quarantined, Region

#: Modalities whose text is kept in ``sensitive`` mode when it is safe (markers, positioning):
#: radiographs and cross-sectional images, where L/R markers matter to readers. Everything else
#: (ultrasound, screen captures, documents) defaults to ``all``.
SENSITIVE_BY_DEFAULT = frozenset({"CR", "DX", "MG", "CT", "MR", "XA", "RF", "PT", "NM", "IO", "PX"})
#: Tokens that identify nobody.
SAFE_WORDS = frozenset(
    """L R LT RT LEFT RIGHT PA AP LAT LATERAL OBL OBLIQUE PORTABLE ERECT SUPINE PRONE UPRIGHT SEMI
    SEMIUPRIGHT SITTING STANDING DECUBITUS INSP EXP INSPIRATION EXPIRATION CHEST ABDOMEN PELVIS HEAD
    NECK SPINE KNEE HAND FOOT WRIST ANKLE ELBOW SHOULDER HIP AXIAL CORONAL SAGITTAL SCOUT TOPOGRAM
    LOCALIZER MARKER TRAUMA UPPER LOWER VIEW FRONTAL BEDSIDE MOBILE""".split()
)
_MEASUREMENT = re.compile(r"^[<>~=]?\d{1,4}([.,]\d+)?(CM|MM|M|HZ|KHZ|MHZ|DB|%|S|MS|FPS|X|KV|MAS|MA|DEG)?$")
_DATE_OR_TIME = re.compile(
    r"\d{1,4}[./-]\d{1,2}[./-]\d{2,4}|\d{1,2}:\d{2}|\b(19|20)\d{6}\b|\d{5,}"
)
_TOKEN = re.compile(r"[A-Za-z0-9%<>~=.,]+")

#: What masked text becomes (see :func:`deid.pixels.render.fill_value`).
FILLS = ("black", "background", "test")


def line_is_safe(text: str, identifying: re.Pattern[str] | None) -> bool:
    """Whether a text line may stay in ``sensitive`` mode: no date, time or long number, none of
    the object's identifying values, and every token a safe word or a measurement."""
    if _DATE_OR_TIME.search(text) or (identifying is not None and identifying.search(text)):
        return False
    tokens = [t.strip(".,").upper() for t in _TOKEN.findall(text)]
    tokens = [t for t in tokens if t]
    return bool(tokens) and all(t in SAFE_WORDS or _MEASUREMENT.match(t) for t in tokens)


class TextStage:
    """Blank burned-in text in objects that may carry it.

    Parameters
    ----------
    mode
        ``all``, ``sensitive``, or ``None`` for the per-modality default.
    fill
        ``black``, ``background`` or ``test`` (mid-grey; see :func:`deid.pixels.render.fill_value`).
    rules
        Known-region rules; default the shipped rules/pixel/*.toml.
    """

    name = "text"

    def __init__(self, mode: str | None = None, fill: str = "black", rules: RegionRules | None = None) -> None:
        if mode not in (None, "all", "sensitive"):
            raise ValueError(f"unknown text mode {mode!r}")
        if fill not in FILLS:
            raise ValueError(f"unknown fill {fill!r}")
        self.fill = fill
        if importlib.util.find_spec("onnxruntime") is None:
            raise ValueError(
                "the text stage needs ONNX Runtime: pip install 'deid-dicom[cpu]' (or [gpu]), "
                "or run with --header-only"
            )
        self.mode = mode
        self.rules = rules or load_region_rules()

    def describe(self) -> str:
        return (
            "blank burned-in text (known regions, outside ultrasound regions, OCR) in every frame "
            "of objects that may carry it; re-encode losslessly"
        )

    def mode_for(self, ds: Dataset) -> str:
        if self.mode is not None:
            return self.mode
        return "sensitive" if str(ds.get("Modality", "")) in SENSITIVE_BY_DEFAULT else "all"

    def __call__(self, item: Instance) -> None:
        ds = item.ds
        if "PixelData" not in ds or not may_carry_text(ds):
            return
        array = pixel_array(ds, "text detection")
        frames = frames_of(array, ds)
        item.looked_at(frames[0])
        known = [Region(layer, box) for layer, box in self.rules.boxes(ds)]
        try:
            read = self._read(frames, ds, [region.box for region in known], item)
        except Exception as exc:  # noqa: BLE001 - detection failed: never pass the object through
            raise Quarantined(f"text detection failed ({type(exc).__name__})") from None
        item.regions += known + read
        masked = known + [region for region in read if region.masked]
        if not masked:
            return
        cleaned = frames.copy()
        fill = fill_value(ds, cleaned, self.fill)
        for x, y, width, height in (region.box for region in masked):
            cleaned[:, y : y + height, x : x + width] = fill
        source = ds.file_meta.TransferSyntaxUID
        encoding = write_pixels(ds, cleaned if array.ndim == cleaned.ndim else cleaned[0], source)
        item.text_masked = True
        layers = [region.layer for region in masked]
        counts = ",".join(f"{layer}:{layers.count(layer)}" for layer in dict.fromkeys(layers))
        item.notes.append(f"text regions {counts}; {encoding.note}")
        item.changed_pixels(self.name, frames[0], cleaned[0], lossy_source=encoding.lossy_source)

    def _read(self, frames: np.ndarray, ds: Dataset, known: list[Box], item: Instance) -> list[Region]:
        """OCR the frame (or the min and max over frames) with the known regions blanked, and read
        small text again at full resolution; every line read, masked unless ``sensitive`` mode
        keeps it."""
        pictures = [frames[0]] if len(frames) == 1 else [frames.min(axis=0), frames.max(axis=0)]
        mode = self.mode_for(ds)
        identifying = item.header.identifying if item.header else None
        lines: dict[Box, Region] = {}
        for stored in pictures:
            picture = to_display(stored, ds)
            for x, y, width, height in known:
                picture[y : y + height, x : x + width] = 0
            first = read_text(picture)
            for line in first + read_small_text(picture, first):
                masked = mode == "all" or not line_is_safe(line.text, identifying)
                if line.box not in lines or masked:
                    lines[line.box] = Region("ocr", line.box, line.text, masked)
        return list(lines.values())

