"""Identifiers that no header attribute lists, found in kept free text.

Other people's names (a reading physician, relatives, a chaperone) where a title, a role or a
degree marks them, and where nothing does (:mod:`deid.freetext.names`); street addresses and
postal codes; telephone numbers (validated by Google's libphonenumber, the ``phonenumbers``
package); dates in numeric, ISO and month-name spellings of several languages; long numbers and
IDs; UIDs and e-mail addresses. Each finding is a ``(start, end, kind)`` span. Words that merely
look like names (eponyms such as Hodgkin or Parkinson, anatomy, laterality) are left alone.
Results are cached per value, since descriptors repeat from file to file.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

from deid.freetext import names
from deid.freetext.variants import MONTH_NAMES

PERSON, ADDRESS, PHONE, DATE, ID, UID, EMAIL = "PERSON", "ADDRESS", "PHONE", "DATE", "ID", "UID", "EMAIL"

#: Regions whose national number formats are tried for a telephone number without a country code.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "NL", "ES", "IT", "RU")
#: Distinct values whose findings each worker process remembers.
CACHE_SIZE = 8192

_UPPER = r"[^\W\d_a-zß-ÿа-я]"  # an upper-case letter of any script
_NAME_WORD = rf"(?:{_UPPER}\.|{_UPPER}['’]{_UPPER}[^\W\d_]+|{_UPPER}[^\W\d_]+(?:['’\-]{_UPPER}?[^\W\d_]+)*(?!\d))"
_NAME = rf"{_NAME_WORD}(?:\s+{_NAME_WORD}){{0,3}}"
#: Titles (as written: "MR" and "DR" in capitals are modalities) and roles (any case) after which
#: a capitalised run of words is a person's name.
_TITLES = (
    r"Dr\.?\s*med\.?|[Dd]r|[Dd]ra|Drs|MUDr|MDDr|[Pp]rof|Mr|Mrs|Ms|Miss|Mme|Mlle|M|Herr|Frau|Dhr|Mevr|Sr|Sra|Sig|"
    r"Sig\.ra|д-р|[Пп]роф|г-н|г-жа|[Вв]рач|[Дд]октор"
)
_ROLES = (
    r"seen by|read by|reported by|reviewed (?:with|by)|dictated by|transcribed by|signed by|verified by|"
    r"referral from|referred by|requested by|ordered by|performed by|attending|radiologist|resident|"
    r"technologist|chaperone|wife|husband|daughter|son|mother|father|sister|brother|partner|spouse|"
    r"guardian|next of kin|befundet von|verfasst von|überwiesen von|ehefrau|ehemann|tochter|sohn|"
    r"demandé par(?: le)?|vu par|épouse|époux|fille|fils|informado por|solicitado por|esposa|esposo|"
    r"hija|hijo|verwezen door|gezien door|echtgenote|описал(?: врач)?|направил|жена|муж|дочь|сын"
)
_PERSON = re.compile(
    rf"(?:(?<![^\W_])(?:{_TITLES})\.?\s+(?:(?:med|dr)\.?\s+)?(?P<titled>{_NAME}))"
    rf"|(?:(?<![^\W_])(?i:{_ROLES})\s*[:,]?\s+(?:(?:{_TITLES})\.?\s+)?(?P<role>{_NAME}))"
    rf"|(?P<degree>{_NAME_WORD}(?:\s+{_NAME_WORD}){{1,3}}),?\s+(?:MD|M\.D\.|DO|PhD|RN|FRCR)(?![^\W_])"
)
_STREET_WORDS = (
    r"street|st|avenue|ave|road|rd|lane|ln|drive|dr|boulevard|blvd|court|ct|place|pl|way|square|sq|"
    r"terrace|close|crescent|highway|hwy"
)
_ADDRESS = re.compile(
    rf"(?<![^\W_])\d{{1,5}}[A-Za-z]?\s+(?:{_UPPER}[\w'.\-]*\s+){{1,4}}(?i:{_STREET_WORDS})\.?(?![^\W_])"
    rf"(?:,?\s+(?:[A-Z]{{1,2}}\d[A-Z\d]?\s*\d[A-Z]{{2}}|[A-Z]{{2}}\s+\d{{5}}(?:-\d{{4}})?|\d{{4,5}}|"
    rf"{_UPPER}[^\W\d_'\-]+(?:\s+{_UPPER}[^\W\d_'\-]+)?(?!\w)))*"
    rf"|(?<![^\W_])[^\W\d_]*(?i:straße|strasse|str\.|weg|gasse|allee|platz|laan|straat|gracht|plein)\s+\d{{1,4}}[a-z]?"
    rf"(?:,?\s+\d{{4,5}}\s+{_UPPER}[^\W\d_]+)?"
    rf"|(?<![^\W_])(?:\d{{1,4}},?\s+)?(?i:rue|avenue|boulevard|bd|chemin|place|calle|avenida|av\.|plaza|paseo|via|"
    rf"viale|piazza|corso|улица|ул\.|проспект|пр-т)\s+[^\d,;]{{2,40}}?(?:\s+\d{{1,4}})?"
    rf"(?:,\s*(?:д|дом|house|no|nr|n°)\.?\s*\d{{1,4}}[а-яa-z]?)?"
    rf"(?:,\s*\d{{4,5}}\s+{_UPPER}[^\W\d_]+)?(?=[,.;)]|$)"
)
_POSTCODE_CITY = re.compile(
    rf"(?<![^\W_])\d{{5}}\s+{_UPPER}[a-zäöüßéèàáíóúñ]+(?![^\W_])|(?<=,\s)\d{{4}}\s+{_UPPER}[a-zäöüßéèàáíóúñøæå]+(?![^\W_])"
)
_UID = re.compile(r"(?<![\w.])[0-2](?:\.(?:0|[1-9]\d*)){4,}(?![\w.]*\w)")
#: Shortest UID searched for: shorter dotted numbers are versions (``2.5.13.1``), not instances.
MIN_UID = 16
_EMAIL = re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+")
_MONTH = "|".join(sorted((re.escape(n) for names in MONTH_NAMES for n in names), key=len, reverse=True))
_DATE = re.compile(
    rf"(?<![\d/.\-])(?:"
    rf"\d{{4}}[\-/.]\d{{1,2}}[\-/.]\d{{1,2}}"
    rf"|\d{{1,2}}[\-/.]\d{{1,2}}[\-/.](?:\d{{4}}|\d{{2}})"
    rf"|\d{{1,2}}\.\s\d{{1,2}}\.\s\d{{4}}"
    rf"|(?:19|20)\d{{2}}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
    rf"|\d{{1,2}}(?:st|nd|rd|th|er|\.)?[\s\-]*(?:{_MONTH})\.?[\s\-,]*\d{{4}}"
    rf"|(?:{_MONTH})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
    rf")(?![\d/.\-]?\d)",
    re.IGNORECASE,
)
_PHONE_CANDIDATE = re.compile(r"(?<![\w.\-])\+?\(?\d[\d\s().\-/]{5,20}\d(?!\w|\.\d)")
_ID = re.compile(
    r"(?<![^\W_])(?:\d{3}-\d{2}-\d{4}|[A-Z]{0,4}[\-#:]?\d(?:[\- ]?\d){4,}[A-Z]?|[A-Z]{1,4}\d{5,}[A-Z\d]*)(?![^\W_])"
)


def _phone(candidate: str) -> bool:
    """Whether ``candidate`` is a possible telephone number of some region (or international):
    the length and digits of one, whether or not its operator has assigned it."""
    if sum(c.isdigit() for c in candidate) < 7:
        return False
    for region in PHONE_REGIONS:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number(number):
            return True
    return False


@lru_cache(maxsize=CACHE_SIZE)
def detect(text: str) -> tuple[tuple[int, int, str], ...]:
    """Spans of identifiers in ``text``: ``(start, end, kind)``, sorted, overlaps kept.

    Parameters
    ----------
    text
        One text value.

    Returns
    -------
    tuple
        The spans; empty when nothing is found.
    """
    spans: list[tuple[int, int, str]] = []
    for pattern, kind in ((_EMAIL, EMAIL), (_UID, UID), (_DATE, DATE), (_ADDRESS, ADDRESS), (_POSTCODE_CITY, ADDRESS)):
        spans += [(m.start(), m.end(), kind) for m in pattern.finditer(text) if kind != UID or len(m[0]) >= MIN_UID]
    for match in _PERSON.finditer(text):
        group = next(g for g in ("titled", "role", "degree") if match.group(g))
        if group == "role" and names.eponym(text, match.start(group), match.end(group)):
            continue  # "Sister Mary Joseph nodule"
        spans.append((match.start(group), match.end(group), PERSON))
    spans += [(start, end, PERSON) for start, end in names.find(text)]
    taken = [(s, e) for s, e, _ in spans]
    for match in _PHONE_CANDIDATE.finditer(text):
        if not _inside(match.start(), match.end(), taken) and _phone(match.group()):
            spans.append((match.start(), match.end(), PHONE))
    taken = [(s, e) for s, e, _ in spans]
    for match in _ID.finditer(text):
        if not _inside(match.start(), match.end(), taken) and sum(c.isdigit() for c in match.group()) >= 5:
            spans.append((match.start(), match.end(), ID))
    return tuple(sorted(spans))


def _inside(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    return any(s <= start and end <= e or start < e and s < end for s, e in spans)
