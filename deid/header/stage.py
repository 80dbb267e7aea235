"""The header stage: apply the rule profile to the whole dataset."""

from __future__ import annotations

from deid.header.engine import HeaderEngine
from deid.pixels.unused_bits import clear_unused_bits
from deid.stage import HeaderResult, Instance


class HeaderStage:
    """Apply a :class:`HeaderEngine` to each instance and hand on what it replaced (:class:`HeaderResult`)
    and how (:class:`~deid.stage.Method`).

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

    def __call__(self, instance: Instance) -> None:
        ctx = self.engine.apply(instance.ds)
        if clear_unused_bits(instance.ds):  # overlays are always removed, old-style ones included
            instance.notes.append("pixel bits above High Bit cleared (old-style overlay)")
            instance.pixels_changed = True
        instance.header = HeaderResult(
            dict(ctx.uid_pairs), (ctx.original_patient_id, ctx.patient_pseudonym), ctx.identifying
        )
        instance.method = self.engine.method
        instance.stages.append(self.name)
