"""Which transfer syntaxes this install decodes, and why an object's pixels cannot be decoded.

pydicom picks among installed decoder plugins. GDCM (python-gdcm, BSD) is the permissive decoder
of JPEG Lossless (Process 14, both selection-value forms), the usual lossless syntax of CR, DX
and MG exports; for every other syntax it is tried last, after the plugins the release was
tested with (pylibjpeg-openjpeg, pyjpegls, Pillow, pylibjpeg-rle), so that adding it changes no
other decode. 12-bit JPEG Extended has one decoder, pylibjpeg-libjpeg (GPLv3): the optional
``gpl-codecs`` extra.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
)

from deid.stage import Quarantined

#: Syntaxes for which GDCM comes first: nothing permissive decodes them otherwise.
GDCM_FIRST = frozenset({JPEGLossless, JPEGLosslessSV1})
#: What to install for a syntax that this install cannot decode.
EXTRA_FOR = {
    JPEGExtended12Bit: "the gpl-codecs extra (pip install 'deid-dicom[gpl-codecs]', pylibjpeg-libjpeg, GPLv3)",
    JPEGLossless: "python-gdcm (a default dependency: pip install python-gdcm) or the gpl-codecs extra",
    JPEGLosslessSV1: "python-gdcm (a default dependency: pip install python-gdcm) or the gpl-codecs extra",
}
_GDCM_PLUGIN = ("gdcm", ("pydicom.pixels.decoders.gdcm", "_decode_frame"))
_configured = False
_LOCK = threading.Lock()


def configure_decoders() -> None:
    """Put GDCM first for JPEG Lossless and last everywhere else (once per process)."""
    global _configured
    with _LOCK:
        if _configured:
            return
        from pydicom.pixels.decoders.base import _PIXEL_DATA_DECODERS

        for decoder, _ in _PIXEL_DATA_DECODERS.values():
            plugins = {**decoder._available, **decoder._unavailable}
            if "gdcm" not in plugins:
                continue
            others = [label for label in plugins if label != "gdcm"]
            order = ["gdcm", *others] if decoder.UID in GDCM_FIRST else [*others, "gdcm"]
            available, unavailable = dict(decoder._available), dict(decoder._unavailable)
            decoder._available.clear()
            decoder._unavailable.clear()
            for label in order:
                if label in available:
                    decoder._available[label] = available[label]
                else:
                    decoder._unavailable[label] = unavailable[label]
        _configured = True


def decodable_syntaxes() -> list[tuple[UID, str]]:
    """The transfer syntaxes whose pixel data this install decodes, each with its plugins.

    Returns
    -------
    list of (UID, str)
        The syntax and the decoders that take it (``"native"`` for uncompressed syntaxes); a
        syntax a plugin takes only in part says so (12-bit JPEG Extended needs the GPL decoder).
    """
    configure_decoders()
    from pydicom.pixels.decoders.base import _PIXEL_DATA_DECODERS

    found = []
    for uid, (decoder, _) in _PIXEL_DATA_DECODERS.items():
        if decoder.is_native:
            found.append((UID(uid), "native"))
        elif decoder.is_available:
            plugins = ", ".join(decoder._available)
            if uid == JPEGExtended12Bit and "pylibjpeg" not in decoder._available:
                plugins += " (8-bit only; 12-bit needs the gpl-codecs extra)"
            found.append((UID(uid), plugins))
    return found


def syntax_listing() -> str:
    """One line per decodable syntax, for ``deid --version`` and ``deid run --dry-run``."""
    return "\n".join(f"  {uid.name} ({uid}): {plugins}" for uid, plugins in decodable_syntaxes())


def undecodable_reason(ds: Dataset, exc: Exception, purpose: str) -> str:
    """The quarantine reason for pixel data that failed to decode: the transfer syntax, and
    the extra that would decode it when this install lacks a decoder (no PHI)."""
    syntax = UID(str(getattr(ds.file_meta, "TransferSyntaxUID", "") or ""))
    name = syntax.name if syntax.is_transfer_syntax else f"transfer syntax {syntax or 'unknown'}"
    what = f"pixel data cannot be decoded for {purpose}"
    missing = _missing_decoder(ds, syntax)
    if missing:
        return f"{what} ({name}): this install has no decoder for it; install {missing}"
    return f"{what} ({name}, {type(exc).__name__})"


def _missing_decoder(ds: Dataset, syntax: UID) -> str | None:
    """What to install when no installed plugin decodes ``syntax`` (``None`` when one does)."""
    from pydicom.pixels.decoders.base import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return "a newer pydicom: pydicom 3.0 has no decoder for this syntax" if syntax.is_transfer_syntax else None
    if syntax == JPEGExtended12Bit and int(ds.get("BitsStored", 8) or 8) > 8 and "pylibjpeg" not in decoder._available:
        return EXTRA_FOR[syntax]
    if decoder.is_available:
        return None
    return EXTRA_FOR.get(syntax, "; ".join(decoder.missing_dependencies) or "a decoder plugin for it")


def pixel_array(ds: Dataset, purpose: str) -> np.ndarray:
    """The decoded pixel data of ``ds``.

    Raises
    ------
    Quarantined
        If it cannot be decoded; the reason names the transfer syntax and what would decode it.
    """
    configure_decoders()
    try:
        return ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - cannot look at the pixels: fail closed
        raise Quarantined(undecodable_reason(ds, exc, purpose)) from None


def stored_frames(ds: Dataset, purpose: str) -> Iterator[np.ndarray]:
    """The decoded frames of ``ds`` one by one, as stored: no colour conversion, and bits
    outside Bits Stored kept (pydicom clears them by default for every syntax but JPEG-LS and
    JPEG 2000).

    Raises
    ------
    Quarantined
        If a frame cannot be decoded; the reason names the transfer syntax and what would decode it.
    """
    configure_decoders()
    from pydicom.pixels.decoders.base import get_decoder

    try:
        decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
        for frame, _ in decoder.iter_array(ds, raw=True, correct_unused_bits=False):
            yield frame
    except Exception as exc:  # noqa: BLE001 - cannot look at the pixels: the caller says so
        raise Quarantined(undecodable_reason(ds, exc, purpose)) from None
