"""Patient's Age over 89 (HIPAA Safe Harbor, 45 CFR 164.514(b)(2)(i)(C)): ages above 89 years
are aggregated into one category, written ``090Y``.

Applies wherever a profile keeps Patient's Age (Retain Patient Characteristics); a site turns
it off with ``hipaa_age_cap = false`` in its profile's ``[profile]`` table.
"""

from __future__ import annotations

import re

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from deid.header.actions import Action, ActionContext

#: Patient's Age (0010,1010).
PATIENT_AGE = 0x00101010
#: The oldest age written as it is; anything older becomes :data:`CAPPED_AGE`.
OLDEST_KEPT_YEARS = 89
CAPPED_AGE = "090Y"
_AGE = re.compile(r"(\d+)\s*([DWMY]?)", re.IGNORECASE)
_DAYS_PER_UNIT = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}


def capped_age(value: str) -> str:
    """``value`` (an AS such as ``093Y``), or ``090Y`` when it is older than 89 years.

    Ages in days, weeks or months are converted to years before comparing; a number without a
    unit (an invalid AS that exports do write, ``93``) counts as years.
    """
    match = _AGE.search(value)
    if not match:
        return value
    years = int(match[1]) * _DAYS_PER_UNIT[(match[2] or "Y").upper()] / _DAYS_PER_UNIT["Y"]
    return CAPPED_AGE if years >= OLDEST_KEPT_YEARS + 1 else value


class CapAge(Action):
    code = "K"
    summary = "keep the age, but write 090Y for any age over 89 years (HIPAA Safe Harbor)"

    def __call__(self, ctx: ActionContext, ds: Dataset, tag: BaseTag, vr: str) -> None:
        value = ds[tag].value
        if isinstance(value, bytes):  # read as UN
            value = value.decode("latin-1")
        text = str(value or "")
        capped = capped_age(text)
        if capped != text:
            ds[tag] = DataElement(tag, "AS", capped)


CAP_AGE = CapAge()
