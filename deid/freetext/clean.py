"""Clean one kept text value: remove the object's own identifying values in any spelling and the
identifiers :func:`deid.freetext.detect.detect` finds."""

from __future__ import annotations

import re

from deid.freetext.detect import detect

_SPACES = re.compile(r"\s{2,}")
_BEFORE_PUNCTUATION = re.compile(r"\s+([.,;:)])")
_EDGES = " \t_-,;:/"


def needs_cleaning(text: str, own: re.Pattern[str] | None) -> bool:
    """Whether ``text`` holds an identifying value (a cheap test before decoding an element)."""
    return bool(own is not None and own.search(text)) or bool(detect(text))


def clean_text(text: str, own: re.Pattern[str] | None) -> str:
    """``text`` without the spans of ``own`` (the object's own values) and the detected identifiers.

    Parameters
    ----------
    text
        One value of a text element.
    own
        The object's own identifying values (:func:`deid.freetext.variants.variant_pattern`).

    Returns
    -------
    str
        The cleaned value, runs of spaces collapsed and separators trimmed at its ends.
    """
    spans = [(m.start(), m.end()) for m in own.finditer(text)] if own is not None else []
    spans += [(start, end) for start, end, _ in detect(text)]
    if not spans:
        return text.strip()
    keep = [True] * len(text)
    for start, end in spans:
        if end < len(text) and text[end] == "_":  # the joiner of SMITH_LESION1 goes with SMITH
            end += 1
        elif start > 0 and text[start - 1] == "_":
            start -= 1
        keep[start:end] = [False] * (end - start)
    cleaned = "".join(c for c, kept in zip(text, keep) if kept)
    return _BEFORE_PUNCTUATION.sub(r"\1", _SPACES.sub(" ", cleaned)).strip(_EDGES)
