"""The header stage: apply the rule profile to the whole dataset."""

from __future__ import annotations

from deid.header.engine import HeaderEngine
from deid.pixels.unused_bits import clear_compressed_unused_bits, clear_unused_bits, declares_overlay_in_pixels
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
        syntax = instance.ds.file_meta.get("TransferSyntaxUID") if hasattr(instance.ds, "file_meta") else None
        overlay_in_compressed = (
            syntax is not None and syntax.is_transfer_syntax and syntax.is_encapsulated
            and "PixelData" in instance.ds and declares_overlay_in_pixels(instance.ds)
        )
        ctx = self.engine.apply(instance.ds)
        # overlays are always removed, old-style ones in the pixel data's unused bits included
        if clear_unused_bits(instance.ds):
            instance.notes.append("pixel bits above High Bit cleared (old-style overlay)")
            instance.pixels_changed = True
        elif overlay_in_compressed and (encoding := clear_compressed_unused_bits(instance.ds)) is not None:
            instance.notes.append(f"pixel bits above High Bit cleared (old-style overlay); {encoding.note}")
            instance.pixels_changed = True
            instance.lossy_source = instance.lossy_source or encoding.lossy_source
        instance.header = HeaderResult(
            dict(ctx.uid_pairs), (ctx.original_patient_id, ctx.patient_pseudonym), ctx.identifying
        )
        instance.method = self.engine.method
        instance.stages.append(self.name)
