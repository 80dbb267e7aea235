"""The header stage: apply the rule profile to the whole dataset."""

from __future__ import annotations

from deid.header.engine import HeaderEngine
from deid.pixels.unused_bits import clear_unused_bits
from deid.stage import Item


class HeaderStage:
    """Apply a :class:`HeaderEngine` to each item and record its pseudonyms.

    Parameters
    ----------
    engine
        The engine holding the profile and the key.
    """

    name = "header"

    def __init__(self, engine: HeaderEngine) -> None:
        self.engine = engine

    def describe(self) -> str:
        profile = self.engine.profile
        options = ", ".join(profile.options) or "no options"
        return f"apply profile {profile.name!r} ({options}) to every attribute at every depth"

    def __call__(self, item: Item) -> None:
        ctx = self.engine.apply(item.ds)
        if clear_unused_bits(item.ds):  # overlays are always removed, old-style ones included
            item.notes.append("pixel bits above High Bit cleared (old-style overlay)")
            item.pixels_changed = True
        item.uid_pairs.update(ctx.uid_pairs)
        item.patient_pair = (ctx.original_patient_id, ctx.patient_pseudonym)
        item.identifying = ctx.identifying
        item.stages.append(self.name)
