"""Pixel access for the pixel stages: stored values out, an 8-bit picture for detectors, the
fill value that blanks a region in stored-value space, and small PNG pictures for the review page."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut


def frames_of(array: np.ndarray, ds: Dataset) -> np.ndarray:
    """``array`` as (frames, rows, columns[, samples])."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return array if frames > 1 else array[np.newaxis]


def to_display(frame: np.ndarray, ds: Dataset, limits: tuple[float, float] | None = None) -> np.ndarray:
    """A uint8 picture of one frame, as a viewer would show it (VOI LUT, palette, MONOCHROME1
    inverted), for text detection: (rows, columns) for a grey frame, RGB for colour.

    ``limits``: the values that become black and white (after the VOI LUT); default the frame's
    own (:func:`display_limits`).
    """
    values = _displayed(frame, ds)
    low, high = limits or _limits(values)
    if values.ndim == 3:  # colour: scale each channel to 8 bits
        return np.clip(values * (255.0 / high) if high > 255 else values, 0, 255).astype(np.uint8)
    gray = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    if str(ds.PhotometricInterpretation) == "MONOCHROME1":
        gray = 255.0 - gray
    return np.clip(gray, 0, 255).astype(np.uint8)


def display_limits(frame: np.ndarray, ds: Dataset) -> tuple[float, float]:
    """The values :func:`to_display` shows as black and white: a grey frame's lowest and highest
    after the VOI LUT; for colour, 0 and the highest sample (at least 1)."""
    return _limits(_displayed(frame, ds))


def _displayed(frame: np.ndarray, ds: Dataset) -> np.ndarray:
    """``frame`` as float32 display values: through the palette, or the modality and VOI LUTs."""
    if str(ds.PhotometricInterpretation) == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        frame = apply_color_lut(frame, ds)
    if frame.ndim == 2 and "WindowCenter" in ds:
        frame = apply_voi_lut(apply_modality_lut(frame, ds), ds)
    return frame.astype(np.float32)


def _limits(values: np.ndarray) -> tuple[float, float]:
    if values.ndim == 3:
        return 0.0, float(values.max()) or 1.0
    return float(values.min()), float(values.max())


#: The long side of the review page's pictures, in pixels.
THUMBNAIL_SIDE = 384


def shrink(frame: np.ndarray, ds: Dataset, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """``frame`` (stored values) with its long side at most ``side`` pixels, area-averaged and in
    its own dtype (palette indices are picked, not averaged)."""
    import cv2

    rows, columns = frame.shape[:2]
    scale = side / max(rows, columns)
    if scale >= 1.0:
        return frame
    size = (max(1, round(columns * scale)), max(1, round(rows * scale)))
    palette = str(ds.PhotometricInterpretation) == "PALETTE COLOR"
    small = cv2.resize(frame.astype(np.float32), size, interpolation=cv2.INTER_NEAREST if palette else cv2.INTER_AREA)
    return np.rint(small).astype(frame.dtype) if np.issubdtype(frame.dtype, np.integer) else small


def thumbnail(frame: np.ndarray, ds: Dataset, limits: tuple[float, float] | None = None,
              side: int = THUMBNAIL_SIDE) -> bytes:
    """A PNG picture of one frame (stored values) as :func:`to_display` shows it, its long side
    at most ``side`` pixels; grey images stay one channel. Pass the ``limits`` of the picture
    before a change to show the picture after it in the same grey scale."""
    import cv2

    picture = to_display(shrink(frame, ds, side), ds, limits)
    if picture.ndim == 3 and (picture[..., 0] == picture[..., 1]).all() and (picture[..., 1] == picture[..., 2]).all():
        picture = picture[..., 0]
    ok, encoded = cv2.imencode(
        ".png", picture if picture.ndim == 2 else cv2.cvtColor(picture, cv2.COLOR_RGB2BGR),
        [cv2.IMWRITE_PNG_COMPRESSION, 3],
    )
    if not ok:
        raise ValueError("PNG encoding failed")
    return encoded.tobytes()


def fill_value(ds: Dataset, frames: np.ndarray, fill: str = "black") -> np.ndarray | int:
    """The value that blanks a region, in stored-value space.

    ``black``: the displayed-black value (the maximum for MONOCHROME1, the minimum of a signed
    grey image, zero otherwise and for colour). ``background``: the most common value (or
    colour) of the four 16-pixel corners of the first frame. ``test``: mid-grey, halfway between
    the image's lowest and highest value (CTP's test mode: a reviewer sees where masks fell).
    """
    first = frames[0]
    if fill == "test":
        return (int(frames.min()) + int(frames.max())) // 2
    if fill == "background":
        size = 16
        corners = [first[:size, :size], first[:size, -size:], first[-size:, :size], first[-size:, -size:]]
        samples = np.concatenate([c.reshape(-1, *first.shape[2:]) for c in corners])
        values, counts = np.unique(samples, axis=0, return_counts=True)
        return values[counts.argmax()]
    if first.ndim == 3:
        return 0
    if str(ds.PhotometricInterpretation) == "MONOCHROME1":
        return int(frames.max())
    return int(frames.min()) if np.issubdtype(frames.dtype, np.signedinteger) else 0
