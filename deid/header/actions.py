"""The PS3.15 action codes as small callable classes.

Each action takes the file's context (:class:`ActionContext`, which the header engine's
:class:`~deid.header.engine.FileContext` is), the dataset, the tag and the VR, and changes that
one element's value in place. Sequences are the walker's: it removes or empties them by the
action's code, or walks their items (:meth:`~deid.header.engine.FileContext.walk_sequence`), so
no action recurses. ``describe()`` says what the action does, so ``deid profiles show`` can list it.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from deid.header.profiles import Profile
from deid.pseudonyms import Pseudonymizer, shift_da, shift_dt

#: VRs holding free text, examined for the object's own identifying values.
TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "AE"})
#: VRs whose dummy is a keyed token (valid as CS, AE, SH and longer strings).
TOKEN_VRS = TEXT_VRS | {"CS"}
_NUMBER_DUMMY = {"DS": "0", "IS": "0", "AS": "000D"}
_TIME_DUMMY = {"DA": "19000101", "DT": "19000101000000", "TM": "000000"}
_BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
_INT_VRS = frozenset({"FL", "FD", "SL", "SS", "UL", "US", "SV", "UV", "AT"})
#: Attributes whose replacement is the patient pseudonym, never a generic dummy.
PATIENT_PSEUDONYM_TAGS = frozenset({0x00100010, 0x00100020})


class ActionContext(Protocol):
    """What an action may use of the file being de-identified."""

    profile: Profile
    pseudo: Pseudonymizer
    patient_pseudonym: str
    shift_days: int

    def map_uid(self, uid: str) -> str:
        """The keyed replacement of ``uid``."""

    def redact_text(self, ds: Dataset, tag: BaseTag) -> None:
        """Remove identifying values from the text at ``tag``."""


class Action:
    """Base of the action codes."""

    code: ClassVar[str]
    summary: ClassVar[str]

    def __call__(self, ctx: ActionContext, ds: Dataset, tag: BaseTag, vr: str) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        """One line on what the action does."""
        return f"{self.code}: {self.summary}"


def _set(ds: Dataset, tag: BaseTag, vr: str, value: object) -> None:
    ds[tag] = DataElement(tag, vr, value)


class Keep(Action):
    code = "K"
    summary = "keep the value; sequences are kept and their items cleaned by the profile"

    def __call__(self, ctx: ActionContext, ds: Dataset, tag: BaseTag, vr: str) -> None:
        """The value stays as it is."""


class Remove(Action):
    code = "X"
    summary = "remove the attribute (a sequence with all its items)"

    def __call__(self, ctx: ActionContext, ds: Dataset, tag: BaseTag, vr: str) -> None:
        del ds[tag]


class Empty(Action):
    code = "Z"
    summary = "replace with a zero-length value (Patient's Name and ID: the patient pseudonym)"

    def __call__(self, ctx: ActionContext, ds: Dataset, tag: BaseTag, vr: str) -> None:
        if tag in PATIENT_PSEUDONYM_TAGS:
            _set(ds, tag, vr, ctx.patient_pseudonym)
        elif vr == "SQ":
            _set(ds, tag, vr, Sequence())
        else:
            _set(ds, tag, vr, None)


class Dummy(Action):
    code = "D"
    summary = "replace with a dummy of the VR: keyed token for text and IDs, fixed for dates and numbers"

    def __call__(self, ctx: ActionContext, ds: Dataset, tag: BaseTag, vr: str) -> None:
        if tag in PATIENT_PSEUDONYM_TAGS:
            _set(ds, tag, vr, ctx.patient_pseudonym)
        elif vr == "UI":
            REPLACE_UID(ctx, ds, tag, vr)
        elif vr in TOKEN_VRS or vr == "PN":
            _set(ds, tag, vr, ctx.pseudo.token(str(ds[tag].value or "")))
        elif vr in _TIME_DUMMY:
            _set(ds, tag, vr, _TIME_DUMMY[vr])
        elif vr in _NUMBER_DUMMY:
            _set(ds, tag, vr, _NUMBER_DUMMY[vr])
        elif vr in _INT_VRS:
            _set(ds, tag, vr, 0)
        elif vr in _BINARY_VRS:
            _set(ds, tag, vr, b"\x00\x00")
        elif vr == "UR":
            _set(ds, tag, vr, "urn:deid")
        else:
            _set(ds, tag, vr, None)


class Clean(Action):
    code = "C"
    summary = (
        "clean: dates shifted by the patient's keyed offset (Modified Dates), free text "
        "stripped of the object's identifying values in any spelling and of the names, addresses, "
        "phone numbers, dates, IDs and UIDs found in it, sequences cleaned item by item"
    )

    def __call__(self, ctx: ActionContext, ds: Dataset, tag: BaseTag, vr: str) -> None:
        if vr in ("DA", "DT"):
            SHIFT_DATE(ctx, ds, tag, vr)
        elif vr in TEXT_VRS or vr in ("PN", "CS"):
            ctx.redact_text(ds, tag)


class ReplaceUID(Action):
    code = "U"
    summary = "replace with a keyed 2.25 UID, the same wherever the original UID appears"

    def __call__(self, ctx: ActionContext, ds: Dataset, tag: BaseTag, vr: str) -> None:
        if vr != "UI":
            DUMMY(ctx, ds, tag, vr)
            return
        element = ds[tag]
        if element.VM == 0:
            return
        values = element.value if element.VM > 1 else [element.value]
        mapped = [ctx.map_uid(str(v)) for v in values]
        element.value = mapped if element.VM > 1 else mapped[0]


class ShiftDate(Action):
    code = "C"
    summary = "shift the date back by the patient's keyed offset, keeping time of day"

    def __call__(self, ctx: ActionContext, ds: Dataset, tag: BaseTag, vr: str) -> None:
        if ctx.profile.date_option != "modified":
            EMPTY(ctx, ds, tag, vr)
            return
        element = ds[tag]
        if element.VM == 0:
            return
        shift = shift_da if vr == "DA" else shift_dt
        values = element.value if element.VM > 1 else [element.value]
        shifted = [shift(str(v), ctx.shift_days) for v in values]
        element.value = shifted if element.VM > 1 else shifted[0]


KEEP, REMOVE, EMPTY, DUMMY = Keep(), Remove(), Empty(), Dummy()
CLEAN, REPLACE_UID, SHIFT_DATE = Clean(), ReplaceUID(), ShiftDate()

#: The action object for each single action code.
BY_CODE: dict[str, Action] = {
    "K": KEEP,
    "X": REMOVE,
    "Z": EMPTY,
    "D": DUMMY,
    "C": CLEAN,
    "U": REPLACE_UID,
}
