"""The object's own identifying values in the spellings free text uses.

A name is also found joined by underscores or written in one run (``SMITH_LESION1``,
``Smith_Jane``, ``欧阳翠花``), in its declined forms (``Иванова``, ``Марией``) and without its
accents; an ID without its letter prefix, its leading zeros or with spaces and dashes inside; a
date as ``14/02/1931``, ``14 Feb 1931``, ``1931-02-14``, ``19310214`` ... The engine strips these
from kept text and ``deid verify`` searches a release for them, with the same patterns.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

#: Kinds of identifying value: each has its own variants.
NAME, ID, DATE, PHONE, TEXT = "name", "id", "date", "phone", "text"

#: Attributes whose values identify the patient or the people and places of the exam, and the
#: kind of variants searched for in free text.
IDENTIFYING_ATTRIBUTES = {
    "PatientName": NAME,
    "OtherPatientNames": NAME,
    "PatientBirthName": NAME,
    "PatientMotherBirthName": NAME,
    "ReferringPhysicianName": NAME,
    "PerformingPhysicianName": NAME,
    "NameOfPhysiciansReadingStudy": NAME,
    "PhysiciansOfRecord": NAME,
    "RequestingPhysician": NAME,
    "OperatorsName": NAME,
    "ResponsiblePerson": NAME,
    "PatientID": ID,
    "OtherPatientIDs": ID,
    "AccessionNumber": ID,
    "StudyID": ID,
    "MedicalRecordLocator": ID,
    "PatientBirthDate": DATE,
    "PatientTelephoneNumbers": PHONE,
    "PatientAddress": TEXT,
    "InstitutionName": TEXT,
    "InstitutionAddress": TEXT,
}
#: Shortest name part searched for on its own (shorter parts match only in the whole name).
MIN_NAME_PART = 3
#: Shortest CJK name part searched for on its own (a run of CJK text has no word boundaries).
MIN_CJK_PART = 2
#: Shortest stem of an inflected (Cyrillic) name; up to MAX_INFLECTION letters may follow it.
MIN_STEM = 3
MAX_INFLECTION = 2
#: Fewest digits an ID, its digit part or a phone number needs to be searched for.
MIN_DIGITS = 5
#: Shortest ID, address part or institution searched for.
MIN_TEXT = 4

#: Name parts that are placeholders, not anyone's name.
PLACEHOLDER_NAMES = frozenset({"ANON", "ANONYMOUS", "ANONYMIZED", "NONE", "UNKNOWN", "TEST", "PATIENT", "PHANTOM"})

#: Month names and abbreviations (English, German, French, Spanish, Italian, Russian), by month.
MONTH_NAMES = (
    ("jan", "january", "januar", "janvier", "enero", "gennaio", "января", "январь", "янв"),
    ("feb", "february", "februar", "février", "fevrier", "febrero", "febbraio", "февраля", "февраль", "фев"),
    ("mar", "march", "märz", "maerz", "mars", "marzo", "марта", "март"),
    ("apr", "april", "avril", "abril", "aprile", "апреля", "апрель", "апр"),
    ("may", "mai", "mayo", "maggio", "мая", "май"),
    ("jun", "june", "juni", "juin", "junio", "giugno", "июня", "июнь"),
    ("jul", "july", "juli", "juillet", "julio", "luglio", "июля", "июль"),
    ("aug", "august", "août", "aout", "agosto", "августа", "август", "авг"),
    ("sep", "sept", "september", "septembre", "septiembre", "settembre", "сентября", "сентябрь", "сен"),
    ("oct", "october", "okt", "oktober", "octobre", "octubre", "ottobre", "октября", "октябрь", "окт"),
    ("nov", "november", "novembre", "noviembre", "ноября", "ноябрь", "ноя"),
    ("dec", "december", "dez", "dezember", "décembre", "decembre", "diciembre", "dicembre",
     "декабря", "декабрь", "дек"),
)
_LETTER_BEFORE = r"(?<![^\W\d_])"  # not after a letter: digits, "_" and punctuation are boundaries
_LETTER_AFTER = r"(?![^\W\d_])"
_ALNUM_BEFORE = r"(?<![^\W_])"
_ALNUM_AFTER = r"(?![^\W_])"
_ID_SEPARATOR = r"[\s\-_./]?"
_PHONE_SEPARATOR = r"[\s\-./()]*"
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_CYRILLIC_ENDINGS = "аеёиоуыэюяйь"
_NAME_SPLIT = re.compile(r"[\^=\s,._\-]+")
_GERMAN = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "AE", "Ö": "OE", "Ü": "UE"})


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _name_part(part: str) -> list[str]:
    """Patterns for one name part: CJK as a substring, Cyrillic with its declensions, others as
    a whole word (letters may not touch it; digits, ``_`` and punctuation may)."""
    if _CJK.search(part):
        return [re.escape(part)] if len(part) >= MIN_CJK_PART else []
    if len(part) < MIN_NAME_PART or part.upper() in PLACEHOLDER_NAMES or not re.search(r"[^\W\d_]", part):
        return []
    if _CYRILLIC.search(part):
        stem = part[:-1] if part[-1].lower() in _CYRILLIC_ENDINGS and len(part) > MIN_STEM else part
        stem_pattern = "".join("[её]" if c in "её" else "[ЕЁ]" if c in "ЕЁ" else re.escape(c) for c in stem)
        return [f"{_LETTER_BEFORE}{stem_pattern}[^\\W\\d_]{{0,{MAX_INFLECTION}}}{_LETTER_AFTER}"]
    spellings = {part, _strip_accents(part), part.translate(_GERMAN)}
    return [f"{_LETTER_BEFORE}{re.escape(s)}(?:'s)?{_LETTER_AFTER}" for s in sorted(spellings)]


def name_patterns(value: str) -> list[str]:
    """Patterns for a person name (PN, any component group)."""
    patterns: list[str] = []
    for group in value.split("="):
        parts = [p for p in _NAME_SPLIT.split(group) if p]
        for component in group.split("^"):  # a family name of several words ("de Vries"), whole
            words = [w for w in _NAME_SPLIT.split(component) if w]
            if len(words) > 1 and not _CJK.search(component):
                joined = r"[\s_.,\-]*".join(re.escape(w) for w in words)
                patterns.append(f"{_LETTER_BEFORE}{joined}{_LETTER_AFTER}")
        if not parts:
            continue
        if any(_CJK.search(p) for p in parts):
            patterns += [re.escape("".join(parts)), re.escape("".join(reversed(parts)))]
        elif len(parts) > 1:
            for order in (parts, parts[::-1]):
                joined = r"[\s_.,\-]*".join(re.escape(p) for p in order)
                patterns.append(f"{_LETTER_BEFORE}{joined}{_LETTER_AFTER}")
        for part in parts:
            patterns += _name_part(part)
    return patterns


def _spaced(core: str, separators: str) -> str:
    """``core`` with optional separators between its characters."""
    return separators.join(re.escape(c) for c in core)


def id_patterns(value: str) -> list[str]:
    """Patterns for an identifier: whole, with or without spaces, dashes, underscores, dots or
    slashes inside, without its letter prefix or leading zeros."""
    core = re.sub(r"[\W_]+", "", value)
    if len(core) < MIN_TEXT or (core.isdigit() and len(core) < MIN_DIGITS):
        return []
    patterns = [_ALNUM_BEFORE + _spaced(core, _ID_SEPARATOR) + _ALNUM_AFTER]
    digits = re.match(r"^[^\W\d_]+0*(\d{%d,})$" % MIN_DIGITS, core) or re.match(r"^0+(\d{%d,})$" % MIN_DIGITS, core)
    if digits:
        patterns.append(r"(?<!\d)" + _spaced(digits[1], _ID_SEPARATOR) + r"(?!\d)")
    return patterns


def date_patterns(value: str) -> list[str]:
    """Patterns for a DA value (``YYYYMMDD``) in numeric, ISO and month-name spellings."""
    text = value.strip()[:8]
    if len(text) != 8 or not text.isdigit():
        return []
    year, month, day = text[:4], int(text[4:6]), int(text[6:])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return []
    d, m = f"0?{day}", f"0?{month}"
    y4, y = year, f"(?:{year}|{year[2:]})"
    sep = r"[\s./\-]"
    names = "|".join(re.escape(n) for n in sorted(MONTH_NAMES[month - 1], key=len, reverse=True))
    mon = rf"(?:{names})\.?"
    th = r"(?:st|nd|rd|th|er|\.)?"
    forms = [
        text,
        rf"{y4}{sep}{m}{sep}{d}",
        rf"{d}{sep}{m}{sep}{y}",
        rf"{m}{sep}{d}{sep}{y}",
        rf"{d}{th}[\s\-.]*{mon}[\s\-.,]*{y4}",
        rf"{mon}[\s\-.]*{d}{th},?[\s\-.]*{y4}",
    ]
    return [rf"(?<!\d){f}(?!\d)" for f in forms]


def phone_patterns(value: str) -> list[str]:
    """Patterns for a telephone number: its digits with any separators between them."""
    digits = re.sub(r"\D", "", value)
    if len(digits) < MIN_DIGITS:
        return []
    patterns = [r"(?<!\d)" + _spaced(digits, _PHONE_SEPARATOR) + r"(?!\d)"]
    if len(digits) >= 10:  # the subscriber number, whatever country or trunk prefix is written
        patterns.append(r"(?<!\d)(?:\+?\d[\s\-./()]*){0,4}" + _spaced(digits[-8:], _PHONE_SEPARATOR) + r"(?!\d)")
    return patterns


def text_patterns(value: str) -> list[str]:
    """Patterns for an address or institution: whole, and each comma-separated part."""
    value = value.strip()
    parts = {value, *(p.strip() for p in re.split(r"[,;\n^]", value))}
    parts |= {p.strip(" 0123456789-/") for p in parts}  # the street without its house number
    patterns = []
    for part in sorted(p for p in parts if len(p) >= MIN_TEXT and re.search(r"[^\W\d_]", p)):
        words = r"[\s_,.\-]+".join(re.escape(w) for w in part.split())
        patterns.append(f"{_ALNUM_BEFORE}{words}{_ALNUM_AFTER}")
    return patterns


_BY_KIND = {NAME: name_patterns, ID: id_patterns, DATE: date_patterns, PHONE: phone_patterns, TEXT: text_patterns}


def patterns_for(kind: str, value: str) -> list[str]:
    """Regular expressions (case-insensitive) for ``value`` of ``kind`` in free text."""
    return _BY_KIND[kind](value)


@lru_cache(maxsize=1024)
def compile_values(values: frozenset[tuple[str, str]]) -> re.Pattern[str] | None:
    """One case-insensitive pattern for a set of ``(kind, value)`` pairs, longest first; the
    objects of one patient share it. ``None`` when no value yields a pattern."""
    alternatives = {p for kind, value in values for p in patterns_for(kind, value)}
    if not alternatives:
        return None
    ordered = sorted(alternatives, key=lambda p: (-len(p), p))
    return re.compile("|".join(f"(?:{p})" for p in ordered), re.IGNORECASE)


def variant_pattern(values: Iterable[tuple[str, str]]) -> re.Pattern[str] | None:
    """:func:`compile_values` for any iterable of ``(kind, value)`` pairs."""
    return compile_values(frozenset(values))
