"""Keyed pseudonyms: UIDs, identifiers and per-patient date shifts derived by HMAC-SHA256.

Everything here is a pure function of the secret key and the original value, so every worker
on every machine, on every night, derives the same pseudonym without shared state.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import date, timedelta
from functools import lru_cache

#: Date shifts fall in 1..MAX_SHIFT_DAYS days back in time.
MAX_SHIFT_DAYS = 3650

#: Pseudonyms remembered per kind (UIDs, tokens).
CACHE_SIZE = 4096


class Pseudonymizer:
    """Derive pseudonyms from a secret key.

    Parameters
    ----------
    key
        The secret key (at least 16 bytes).

    Raises
    ------
    ValueError
        If the key is shorter than 16 bytes.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the key must be at least 16 bytes")
        self._key = key
        # study, series and frame-of-reference UIDs repeat from file to file, instance UIDs do
        # not: a small cache keeps the repeats, and memory stays flat over a long run
        self.uid = lru_cache(maxsize=CACHE_SIZE)(self._uid)
        self.token = lru_cache(maxsize=CACHE_SIZE)(self._token)

    def digest(self, domain: str, value: str) -> bytes:
        """HMAC-SHA256 of ``value`` in ``domain`` (domains keep pseudonym kinds apart)."""
        message = domain.encode() + b"\0" + value.encode("utf-8", "surrogateescape")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _uid(self, uid: str) -> str:
        """A ``2.25.`` UID (at most 44 characters) for ``uid``."""
        return "2.25." + str(int.from_bytes(self.digest("uid", uid.strip())[:16], "big"))

    def _token(self, value: str) -> str:
        """A 16-character base32 pseudonym for an identifier such as a Patient ID."""
        return base64.b32encode(self.digest("id", value.strip())[:10]).decode()

    def fingerprint(self) -> str:
        """A short public fingerprint of the key, safe to print, to tell keys apart."""
        return self.digest("fingerprint", "")[:6].hex()

    def date_shift_days(self, patient_key: str) -> int:
        """The number of days (1..MAX_SHIFT_DAYS) this patient's dates move back."""
        digest = self.digest("date-shift", patient_key)
        return 1 + int.from_bytes(digest[:8], "big") % MAX_SHIFT_DAYS


def shift_da(value: str, days: int) -> str:
    """Shift a DA value (``YYYYMMDD``) back by ``days``; return ``""`` if it is not a full date.

    Partial dates (``YYYY``, ``YYYYMM``) are kept at their precision after the shift of their
    first day.
    """
    text = value.strip()
    if len(text) == 10 and text[4] == "." and text[7] == ".":  # ACR-NEMA YYYY.MM.DD
        text = text.replace(".", "")
    padded = text + "0101"[len(text) - 4 :] if len(text) in (4, 6) else text
    if len(padded) != 8 or not padded.isdigit():
        return ""
    try:
        shifted = date(int(padded[:4]), int(padded[4:6]), int(padded[6:])) - timedelta(days=days)
    except ValueError:
        return ""
    return shifted.strftime("%Y%m%d")[: len(text)]


def shift_dt(value: str, days: int) -> str:
    """Shift the date part of a DT value back by ``days``, keeping time and UTC offset."""
    text = value.strip()
    date_part = text[:8] if len(text) >= 8 else text
    shifted = shift_da(date_part, days)
    return shifted + text[len(date_part) :] if shifted else ""
