"""``deid verify``: what the pixels of a release still show.

* ``pixel-bits``: samples with bits set outside Bits Stored / High Bit, where old-style overlays
  (and their text) hide; native pixel data is read as stored, compressed pixel data is decoded
  with the run's decoders (:mod:`deid.pixels.codecs`), and an image this install cannot decode
  is reported as not checked, with its transfer syntax and what would decode it.
* ``pixel-text`` (``deid verify --ocr``): text that OCR, both reads of the text stage, still finds
  in the pixels of a release image and that the text stage's ``sensitive`` rule would not keep
  (a date, a time, a long number, an identifying value of the inputs, any word that is not a
  marker or a measurement); lines of fewer than two letters or digits are not counted, nor a
  "line" over most of a picture (:data:`MAX_LINE_SHARE`): the detector, which enlarges a small
  picture, takes a large textured area (noisy anatomy) for one, and the recogniser reads a glyph
  or two in it. The text stage masks such an area all the same (fail closed); verify counts them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydicom.uid import UID

from deid.pixels.unused_bits import decoded_unused_bits, may_have_unused_bits, unused_bits_set
from deid.verify import Finding, Release, register_check

#: A line counts as text when it holds two letters or digits (a masked box's edge reads as one dash).
_READABLE = re.compile(r"[^\W_].*[^\W_]")
#: A "line" more than this share of the picture both high and wide is a textured area, not text.
MAX_LINE_SHARE = 0.5


@register_check
class PixelBitsCheck:
    """Pixel samples of the release with bits set above High Bit, native or decoded."""

    name = "pixel-bits"

    def describe(self) -> str:
        return (
            "pixel samples (native, or compressed and decoded) with bits set outside Bits Stored / High Bit "
            "(old-style overlays)"
        )

    def __call__(self, release: Release) -> Iterable[Finding]:
        from deid.pixels.codecs import stored_frames
        from deid.stage import Quarantined

        images, not_checked = 0, dict[str, int]()
        for relative in release.output_files():
            ds = release.read_output(relative)
            if ds is None or "PixelData" not in ds:
                continue
            syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "") or ""))
            try:
                if not syntax.is_transfer_syntax:
                    raise Quarantined("the transfer syntax is missing or unknown")
                if syntax.is_encapsulated:
                    frames = stored_frames(ds, "the check of bits above High Bit") if may_have_unused_bits(ds) else ()
                    samples = sum(decoded_unused_bits(frame, ds) for frame in frames)
                else:
                    samples = unused_bits_set(ds)
            except Quarantined as exc:
                not_checked[str(exc)] = not_checked.get(str(exc), 0) + 1
                continue
            images += 1
            if samples:
                yield Finding(self.name, "pixels", "PixelData bits above High Bit", relative, "pixels",
                              f"{samples} samples", release.origins.get(relative, ""))
        release.count("release images checked for bits above High Bit", images)
        for reason, count in sorted(not_checked.items()):
            release.count("release images not checked for bits above High Bit (cannot be decoded)", count)
            release.notes.append(f"{count} release image(s) not checked for bits above High Bit: {reason}")


@register_check
class PixelTextCheck:
    """Text OCR still reads in the release's images (opt-in: ``deid verify --ocr``)."""

    name = "pixel-text"
    opt_in = True

    def describe(self) -> str:
        return (
            "text OCR still reads in the pixels (both reads of the text stage) that a sensitive-mode rule "
            "would not keep"
        )

    def __call__(self, release: Release) -> Iterable[Finding]:
        from deid.pixels.codecs import pixel_array
        from deid.pixels.ocr import read_text
        from deid.pixels.render import frames_of, to_display
        from deid.pixels.small_text import read_small_text
        from deid.pixels.text import line_is_safe
        from deid.stage import Quarantined

        identifying = _pattern(release)
        pictures = 0
        for relative in release.output_files():
            ds = release.read_output(relative)
            if ds is None or "PixelData" not in ds:
                continue
            try:
                frames = frames_of(pixel_array(ds, "verify"), ds)
            except Quarantined:
                release.count("release images OCR could not decode")
                continue
            for stored in [frames[0]] if len(frames) == 1 else [frames.min(axis=0), frames.max(axis=0)]:
                picture = to_display(stored, ds)
                pictures += 1
                first = read_text(picture)
                for line in first + read_small_text(picture, first):
                    if _spans_picture(line.box, picture.shape[:2]):
                        release.count("OCR 'lines' over most of a picture (a textured area) not counted as text")
                        continue
                    if _READABLE.search(line.text) and not line_is_safe(line.text, identifying):
                        x, y, width, height = line.box
                        yield Finding(self.name, "text", f"pixels at x={x} y={y} w={width} h={height}",
                                      relative, "pixels", line.text, release.origins.get(relative, ""))
        release.count("release pictures read by OCR", pictures)


def _spans_picture(box: tuple[int, int, int, int], shape: tuple[int, ...]) -> bool:
    """Whether ``box`` covers more than :data:`MAX_LINE_SHARE` of a picture of ``shape`` (rows,
    columns) both high and wide."""
    _, _, width, height = box
    return width > MAX_LINE_SHARE * shape[1] and height > MAX_LINE_SHARE * shape[0]


def _pattern(release: Release) -> re.Pattern[str] | None:
    """The inputs' identifying values as one case-insensitive whole-word pattern."""
    values = sorted({i.value for i in release.identifiers if len(i.value) >= 3}, key=len, reverse=True)
    if not values:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(v) for v in values) + r")(?!\w)", re.IGNORECASE)
