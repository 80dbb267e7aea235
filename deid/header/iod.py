"""Attribute Types (1, 1C, 2, 2C, 3) per SOP class, from PS3.3 (rules/iod-types.json).

Compound action codes (Z/D, X/Z, X/D, X/Z/D, X/Z/U*) depend on whether an attribute is Type 1
or Type 2 in the object's IOD; this module answers that question.
"""

from __future__ import annotations

import json
from functools import lru_cache

from deid.shipped import rules_dir


@lru_cache(maxsize=1)
def _tables() -> dict:
    return json.loads((rules_dir() / "iod-types.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=256)
def attribute_types(sop_class_uid: str) -> dict[tuple[str, ...], str] | None:
    """Map ``(*sequence keywords, keyword)`` to the strongest Type in the IOD, for the
    attributes that compound action codes name.

    Parameters
    ----------
    sop_class_uid
        The object's SOP Class UID.

    Returns
    -------
    dict or None
        The Types, or ``None`` when the IOD of the SOP class is not known.
    """
    tables = _tables()
    iod = tables["sop_classes"].get(sop_class_uid)
    if iod is None:
        return None
    return {tuple(key.split("/")): value for key, value in tables["iods"][iod].items()}


def resolve_compound(code: str, attribute_type: str | None) -> str:
    """Resolve a compound action code to a single one.

    With the Type known: Z/D gives D for Type 1, else Z; X/Z gives Z for Type 2, else X;
    X/D gives X for Type 3, else D (a Type 2 attribute may not go missing); X/Z/D gives D,
    Z or X for Type 1, 2 or 3. X/Z/U* always keeps the reference sequence with every
    contained UID replaced (U): the references stay resolvable inside the release, which
    validators check, and no original UID survives. With the Type unknown the result must
    be safe and conformant whatever the Type: D for Z/D, X/D and X/Z/D (a dummy value leaks
    nothing and satisfies Type 1) and Z for X/Z.
    """
    base = attribute_type.rstrip("C") if attribute_type else None
    if code == "Z/D":
        return "Z" if base in ("2", "3") else "D"
    if code == "X/Z":
        return "X" if base == "3" else "Z"
    if code == "X/D":
        return "X" if base == "3" else "D"
    if code == "X/Z/D":
        return {"1": "D", "2": "Z", "3": "X"}.get(base or "", "D")
    if code == "X/Z/U*":
        return "U"
    return code
