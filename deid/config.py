"""The configuration of a run: what decides every output, and its fingerprint.

Picklable and hashable, so that it travels to every worker; free of pydicom, so that the driver
of a run with nothing to do stays light. Which stage owns which field, and what of it counts in
the fingerprint, is declared in :mod:`deid.registry`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from deid import __version__
from deid.pseudonyms import Pseudonymizer
from deid.registry import DP_PIX, fingerprint_parts
from deid.shipped import default_pixels, rules_dir

#: The most an input may inflate or decode to, by default: the largest real objects (breast
#: tomosynthesis, enhanced multi-frame CT and MR of thousands of slices) decode to 0.5-2 GB, so
#: an input beyond this is a decompression bomb, quarantined before it can take a worker's memory.
MAX_OBJECT_SIZE = 2 * 1024**3
_UNITS = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "KI": 1024, "MI": 1024**2, "GI": 1024**3}


def parse_size(text: str) -> int:
    """Bytes from ``512MiB``, ``2GiB``, ``1.5G``, ``800M`` or a plain number (``B`` optional).

    Raises
    ------
    ValueError
        If ``text`` is not a positive size.
    """
    number = text.strip().upper().removesuffix("B")
    unit = number.lstrip("0123456789.").strip()
    try:
        size = int(float(number[: len(number) - len(unit)]) * _UNITS[unit])
    except (KeyError, ValueError):
        raise ValueError(f"not a size: {text!r} (e.g. 512MiB, 2GiB)") from None
    if size <= 0:
        raise ValueError(f"not a positive size: {text!r}")
    return size


@dataclass(frozen=True)
class RunConfig:
    """Everything a worker needs to process a file; picklable and hashable.

    Besides the profile, key, ``header_only``, ``pixels`` and ``max_object_size``, the fields are
    the stages' own: :data:`deid.registry.STAGES` names each stage's fields and the CLI options
    that set them (a test keeps the two in step).

    Attributes
    ----------
    profile
        Profile name or path.
    options
        Options added to the profile's own.
    key
        The secret key.
    header_only
        Skip every pixel stage (objects that need pixel cleaning are then quarantined).
    text_mode
        Burned-in text mode, ``all`` or ``sensitive``; ``None``: the per-modality default.
    text_fill
        What masked text becomes: ``black``, ``background`` or ``test`` (mid-grey).
    pixels
        The whole-image pixel stage after the text stage: ``deform``, ``dp-pix`` or ``none``;
        default :func:`deid.shipped.default_pixels` (``deform`` only when the shipped model's
        measured privacy meets its card's milestone).
    deform_model
        Path of the ONNX deformation model; ``None``: the shipped models/deform.onnx.
    deform_rules
        Path of a site's eligibility rules for the whole-image stage; ``None``: the shipped
        rules/pixel/deform.toml.
    dp_pix
        DP-Pix ``(block, epsilon, m)``.
    max_object_size
        The most, in bytes, an input may inflate or decode to; beyond it, it is quarantined as
        a decompression bomb (:data:`MAX_OBJECT_SIZE` by default).
    """

    profile: str
    options: tuple[str, ...]
    key: bytes
    header_only: bool = False
    text_mode: str | None = None
    text_fill: str = "black"
    pixels: str = field(default_factory=default_pixels)
    deform_model: str | None = None
    deform_rules: str | None = None
    dp_pix: tuple[int, float, float] = DP_PIX
    max_object_size: int = MAX_OBJECT_SIZE

    def fingerprint(self) -> str:
        """Hash of what decides the output: version, rules, options, stages, model, key (not revealed)."""
        digest = hashlib.sha256()
        stage_switches, stage_files = fingerprint_parts(self)
        switches = "|".join((__version__, self.profile, ",".join(self.options), str(self.header_only), *stage_switches))
        if self.max_object_size != MAX_OBJECT_SIZE:  # ledgers made with the default stay valid
            switches += f"|max_object_size={self.max_object_size}"
        digest.update(switches.encode())
        for path in sorted(rules_dir().rglob("*")):
            if path.suffix in (".toml", ".json"):
                digest.update(path.read_bytes())
        site_files = [Path(self.profile)] if Path(self.profile).suffix == ".toml" else []
        for path in site_files + stage_files:
            if path.is_file():
                digest.update(path.read_bytes())
        digest.update(Pseudonymizer(self.key).fingerprint().encode())
        return digest.hexdigest()[:16]


__all__ = ["RunConfig", "MAX_OBJECT_SIZE", "parse_size"]
