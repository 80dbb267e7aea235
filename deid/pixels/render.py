"""Pixel access for the pixel stages: stored values out, an 8-bit picture for detectors, and the
fill value that blanks a region in stored-value space."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut


def frames_of(array: np.ndarray, ds: Dataset) -> np.ndarray:
    """``array`` as (frames, rows, columns[, samples])."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return array if frames > 1 else array[np.newaxis]


def to_display(frame: np.ndarray, ds: Dataset) -> np.ndarray:
    """An RGB uint8 picture of one frame, as a viewer would show it (VOI LUT, palette,
    MONOCHROME1 inverted), for text detection."""
    photometric = str(ds.PhotometricInterpretation)
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        frame = apply_color_lut(frame, ds)
    if frame.ndim == 3:  # colour: scale each channel to 8 bits
        picture = frame.astype(np.float32)
        top = float(picture.max()) or 1.0
        return np.clip(picture * (255.0 / top) if top > 255 else picture, 0, 255).astype(np.uint8)
    values = apply_voi_lut(apply_modality_lut(frame, ds), ds) if "WindowCenter" in ds else frame
    values = values.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    gray = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    if photometric == "MONOCHROME1":
        gray = 255.0 - gray
    gray = gray.astype(np.uint8)
    return np.repeat(gray[..., np.newaxis], 3, axis=2)


def fill_value(ds: Dataset, frames: np.ndarray, fill: str = "black") -> np.ndarray | int:
    """The value that blanks a region, in stored-value space.

    ``black``: the displayed-black value (the maximum for MONOCHROME1, the minimum of a signed
    grey image, zero otherwise and for colour). ``background``: the most common value (or
    colour) of the four 16-pixel corners of the first frame.
    """
    first = frames[0]
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
