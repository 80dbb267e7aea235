"""Write changed pixel data back without losing information: the input's lossless transfer
syntax where there is an encoder, lossless JPEG 2000 or native little endian otherwise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

#: Compressed syntaxes whose pixels are exact.
LOSSLESS = frozenset(
    {
        RLELossless,
        JPEGLSLossless,
        JPEG2000Lossless,
        UID("1.2.840.10008.1.2.4.57"),  # JPEG Lossless
        UID("1.2.840.10008.1.2.4.70"),  # JPEG Lossless SV1
        UID("1.2.840.10008.1.2.4.201"),  # HTJ2K Lossless
        UID("1.2.840.10008.1.2.4.202"),  # HTJ2K Lossless RPCL
    }
)
#: Encoder plugin for each lossless syntax; named explicitly (never let pydicom pick gdcm).
ENCODERS = {RLELossless: "pydicom", JPEGLSLossless: "pyjpegls", JPEG2000Lossless: "pylibjpeg"}


@dataclass(frozen=True)
class Encoding:
    """How changed pixels were written back.

    Attributes
    ----------
    note
        What the manifest says of the encoding (no PHI).
    lossy_source
        The pixels were decoded from a lossy transfer syntax: their history stays lossy, which
        the provenance stage records (Lossy Image Compression).
    """

    note: str
    lossy_source: bool


def target_syntax(source: UID) -> UID:
    """The syntax to write: the source if native or lossless with an encoder, else J2K lossless."""
    if not source.is_compressed:
        return ExplicitVRLittleEndian
    return source if source in ENCODERS else JPEG2000Lossless


def write_pixels(ds: Dataset, array: np.ndarray, source: UID) -> Encoding:
    """Store ``array`` in ``ds`` and encode it; return how (:class:`Encoding`).

    A lossy source is never re-encoded lossily: it goes to lossless JPEG 2000 (or native when
    no encoder takes the data, e.g. 32-bit samples).
    """
    if not source.is_compressed and int(ds.get("SamplesPerPixel", 1)) == 1 and int(ds.BitsAllocated) % 8 == 0:
        # native grey or palette samples: new bytes in the same layout and syntax
        order = ">" if not source.is_little_endian else "<"
        dtype = np.dtype(f"{order}{'i' if int(ds.PixelRepresentation) else 'u'}{int(ds.BitsAllocated) // 8}")
        ds.PixelData = array.astype(dtype).tobytes()
        return Encoding("native", lossy_source=False)
    if not source.is_little_endian:  # pydicom sets pixel data in little endian only
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    photometric = str(ds.PhotometricInterpretation)
    if photometric.startswith("YBR") and array.ndim >= 3 and array.shape[-1] == 3:
        photometric = "RGB"  # pydicom decoded and converted the colour space
    ds.set_pixel_data(
        array,
        photometric_interpretation=photometric,
        bits_stored=int(ds.BitsStored),
        generate_instance_uid=False,
    )
    target = target_syntax(source)
    note = "native" if target == ExplicitVRLittleEndian else target.name
    if target != ExplicitVRLittleEndian:
        try:
            ds.compress(target, encoding_plugin=ENCODERS[target], generate_instance_uid=False)
        except Exception:  # noqa: BLE001 - no encoder takes these samples: stay native, lossless
            note = "native (no lossless encoder takes these samples)"
        else:
            if target == JPEG2000Lossless and photometric == "RGB":
                ds.PhotometricInterpretation = "YBR_RCT"  # the encoder applied the reversible transform
    lossy_source = source.is_compressed and source not in LOSSLESS
    if lossy_source:
        note += ", lossy input re-encoded losslessly"
    return Encoding(note, lossy_source)
