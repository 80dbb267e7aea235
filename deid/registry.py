"""The stages of a run, declared once.

Each :class:`StageSpec` says what a stage is called, what it handles, which ``deid run`` options
set its part of :class:`~deid.config.RunConfig`, what of it goes into the run's fingerprint,
when it is in force and how it is built. The CLI's options and ``--pixels`` choices, the
fingerprint, the gate's refusals and each worker's stage list are derived from :data:`STAGES`:
a new stage is its module and one entry here, before ``provenance``, which stays the last.

Light on purpose (no pydicom, numpy or click): the driver of a run with nothing to do reads it.
Stage modules are imported only when a stage is built, in the workers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deid.shipped import default_model

if TYPE_CHECKING:
    from deid.config import RunConfig
    from deid.header.profiles import Profile
    from deid.pseudonyms import Pseudonymizer
    from deid.stage import Stage

#: DP-Pix as PriCheXy-Net's baseline runs it: cell side, privacy budget, neighbourhood (pixels that differ).
DP_PIX = (8, 0.1, 1.0)
#: The ``--pixels`` choice that runs no whole-image stage.
NO_WHOLE_IMAGE_STAGE = "none"


@dataclass(frozen=True)
class Option:
    """A ``deid run`` option that sets (part of) a :class:`~deid.config.RunConfig` field.

    Attributes
    ----------
    flags
        The option's flags, e.g. ``("--text-mode",)``.
    field
        The RunConfig field it sets.
    help
        Its help text.
    choices
        The values it accepts (``None``: any of ``kind``).
    kind
        ``str``, ``int``, ``float``, ``bool`` (a flag) or ``path`` (an existing file, stored as a string).
    default
        Its default, shown in ``--help`` (``None``: no default shown).
    part
        Index of the tuple element this option sets when several options fill one field.
    """

    flags: tuple[str, ...]
    field: str
    help: str
    choices: tuple[str, ...] | None = None
    kind: str = "str"
    default: Any = None
    part: int | None = None

    @property
    def parameter(self) -> str:
        """The name click gives the option's value: the longest flag, without dashes."""
        return max(self.flags, key=len).lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Refusal:
    """What the gate quarantines while a stage is not in force: objects only that stage can make safe.

    Attributes
    ----------
    needs_stage
        ``"module:function"`` of a predicate on a dataset: whether the object needs the stage.
    reason
        The quarantine reason (no PHI).
    describe
        What is refused, for ``--dry-run``.
    """

    needs_stage: str
    reason: str
    describe: str

    def predicate(self) -> Callable[[Any], bool]:
        return _resolve(self.needs_stage)


@dataclass(frozen=True)
class BuildContext:
    """What a stage may need besides the configuration: the compiled profile and the keyed pseudonymizer."""

    profile: Profile
    pseudo: Pseudonymizer


@dataclass(frozen=True)
class StageSpec:
    """One stage of a run.

    Attributes
    ----------
    name
        The stage's name (the manifest's ``stages``, ``--pixels`` for a whole-image stage).
    handles
        What the stage handles, in one line.
    build
        Takes ``(config, context)`` and returns the stage; it imports the stage's module, so
        that only the workers load it.
    fields
        The RunConfig fields that are its part of the configuration; in the fingerprint.
    options
        The ``deid run`` options that set them.
    whole_image
        A whole-image pixel stage: ``--pixels`` chooses at most one of them.
    pixel
        A pixel stage (off with ``--header-only``).
    files
        The files whose bytes decide its output (model, rules); in the fingerprint.
    refusal
        What the gate quarantines while the stage is not in force.
    """

    name: str
    handles: str
    build: Callable[[RunConfig, BuildContext], Stage]
    fields: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()
    whole_image: bool = False
    pixel: bool = False
    files: Callable[[RunConfig], list[Path]] = field(default=lambda config: [])
    refusal: Refusal | None = None

    def in_force(self, config: RunConfig) -> bool:
        """Whether ``config`` runs this stage."""
        if self.pixel and config.header_only:
            return False
        return not self.whole_image or config.pixels == self.name


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(__import__(module, fromlist=[name]), name)


def _gate(config: RunConfig, context: BuildContext) -> Stage:
    from deid.gate import Gate

    refused = [(refusal.predicate(), refusal.reason, refusal.describe) for refusal in refusals(config)]
    return Gate(context.profile, refused)


def _header(config: RunConfig, context: BuildContext) -> Stage:
    from deid.header.engine import HeaderEngine
    from deid.header.stage import HeaderStage

    return HeaderStage(HeaderEngine(context.profile, context.pseudo))


def _text(config: RunConfig, context: BuildContext) -> Stage:
    from deid.pixels.text import TextStage  # numpy, OpenCV and OCR only when pixels are cleaned

    return TextStage(config.text_mode, config.text_fill)


def _eligibility(config: RunConfig) -> Any:
    from deid.pixels.eligibility import load_eligibility

    return load_eligibility(Path(config.deform_rules) if config.deform_rules else None)


def _deform(config: RunConfig, context: BuildContext) -> Stage:
    from deid.pixels.deform import DeformStage

    return DeformStage(Path(config.deform_model) if config.deform_model else None, _eligibility(config), context.pseudo)


def _dp_pix(config: RunConfig, context: BuildContext) -> Stage:
    from deid.pixels.dppix import DpPixStage

    return DpPixStage(context.pseudo, *config.dp_pix, eligibility=_eligibility(config))


def _provenance(config: RunConfig, context: BuildContext) -> Stage:
    from deid.provenance import ProvenanceStage

    return ProvenanceStage()


def _whole_image_files(config: RunConfig) -> list[Path]:
    return [Path(config.deform_rules)] if config.deform_rules else []


def _deform_files(config: RunConfig) -> list[Path]:
    if config.pixels != "deform":
        return []
    return [Path(config.deform_model) if config.deform_model else default_model()]


_ELIGIBILITY = Option(
    ("--deform-rules",), "deform_rules", kind="path",
    help="Which objects --pixels changes (TOML like rules/pixel/deform.toml); default the shipped rules.",
)

#: The stages, in the order they run; ``provenance``, which claims in the header what the others
#: did, stays the last.
STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        "gate", "quarantine what the stages in force cannot make safe", _gate,
    ),
    StageSpec(
        "header", "the profile's rules on every attribute at every depth", _header,
    ),
    StageSpec(
        "text", "burned-in text in objects that may carry it", _text,
        fields=("text_mode", "text_fill"),
        options=(
            Option(("--text-mode",), "text_mode", choices=("all", "sensitive"),
                   help="Burned-in text: blank all of it, or keep safe text (markers, units); "
                        "default: sensitive for radiographs and CT/MR, all otherwise."),
            Option(("--text-fill",), "text_fill", choices=("black", "background", "test"), default="black",
                   help="What masked text becomes: black, the image's background value, or mid-grey (test: "
                        "shows where masks fell; not for a release)."),
        ),
        pixel=True,
        refusal=Refusal(
            "deid.gate:may_carry_text",
            "image may carry burned-in text and pixel cleaning is off (--header-only): run without it",
            "images likely to carry burned-in text when no pixel cleaning runs",
        ),
    ),
    StageSpec(
        "deform", "the learned deformation of eligible chest radiographs", _deform,
        fields=("deform_model", "deform_rules"),
        options=(
            Option(("--deform-model",), "deform_model", kind="path",
                   help="ONNX deformation model, with its .json metadata beside it; default the shipped "
                        "models/deform.onnx."),
            _ELIGIBILITY,
        ),
        whole_image=True, pixel=True, files=lambda config: _whole_image_files(config) + _deform_files(config),
    ),
    StageSpec(
        "dp-pix", "DP-Pix on eligible chest radiographs", _dp_pix,
        fields=("dp_pix", "deform_rules"),
        options=(
            Option(("--dp-pix-block",), "dp_pix", kind="int", default=DP_PIX[0], part=0,
                   help="DP-Pix cell side, in pixels."),
            Option(("--dp-pix-epsilon",), "dp_pix", kind="float", default=DP_PIX[1], part=1,
                   help="DP-Pix privacy budget."),
            Option(("--dp-pix-m",), "dp_pix", kind="float", default=DP_PIX[2], part=2,
                   help="DP-Pix neighbourhood (pixels that may differ)."),
            _ELIGIBILITY,
        ),
        whole_image=True, pixel=True, files=_whole_image_files,
    ),
    StageSpec(
        "provenance", "what the stages did, claimed in the header (PS3.15 attributes, derivation, lossy "
        "compression)", _provenance,
    ),
)

#: Fields fingerprinted by the content of the file they name, not by their value.
_PATH_FIELDS = frozenset(option.field for spec in STAGES for option in spec.options if option.kind == "path")


def whole_image_choices() -> tuple[str, ...]:
    """The ``--pixels`` choices: each whole-image stage, then ``none``."""
    return (*(spec.name for spec in STAGES if spec.whole_image), NO_WHOLE_IMAGE_STAGE)


def run_options() -> list[Option]:
    """The stages' ``deid run`` options, each once, in stage order."""
    options: dict[tuple[str, ...], Option] = {}
    for spec in STAGES:
        for option in spec.options:
            options.setdefault(option.flags, option)
    return list(options.values())


def config_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """RunConfig fields from the values click gives :func:`run_options` (by parameter name)."""
    fields: dict[str, Any] = {}
    parts: dict[str, dict[int, Any]] = {}
    for option in run_options():
        value = values.get(option.parameter)
        if option.kind == "path" and value is not None:
            value = str(value)
        if option.part is None:
            fields[option.field] = value
        else:
            parts.setdefault(option.field, {})[option.part] = value
    for name, elements in parts.items():
        fields[name] = tuple(elements[index] for index in sorted(elements))
    return fields


def fingerprint_parts(config: RunConfig) -> tuple[list[str], list[Path]]:
    """What of the stages decides the output: the values of their fields (``--pixels`` before the
    first whole-image stage's) and the files they read (paths count by their content)."""
    switches: list[str] = []
    files: list[Path] = []
    for position, spec in enumerate(STAGES):
        if spec.whole_image and not any(earlier.whole_image for earlier in STAGES[:position]):
            switches.append(config.pixels)
        for name in spec.fields:
            if name not in _PATH_FIELDS:
                value = getattr(config, name)
                switches.append(",".join(map(str, value)) if isinstance(value, tuple) else str(value))
        files += [path for path in spec.files(config) if path not in files]
    return switches, files


def build_stages(config: RunConfig, context: BuildContext) -> tuple[Stage, ...]:
    """The stages ``config`` runs, built, in order.

    Raises
    ------
    ValueError
        If ``config.pixels`` names no whole-image stage, or a stage cannot be built (model,
        rules, ONNX Runtime).
    """
    if config.pixels not in whole_image_choices():
        raise ValueError(f"unknown pixel stage {config.pixels!r}; choose from {', '.join(whole_image_choices())}")
    return tuple(spec.build(config, context) for spec in STAGES if spec.in_force(config))


def refusals(config: RunConfig) -> list[Refusal]:
    """What the gate must quarantine under ``config``: the refusals of the stages not in force."""
    return [spec.refusal for spec in STAGES if spec.refusal is not None and not spec.in_force(config)]


__all__ = [
    "STAGES",
    "StageSpec",
    "Option",
    "Refusal",
    "BuildContext",
    "DP_PIX",
    "whole_image_choices",
    "run_options",
    "config_values",
    "fingerprint_parts",
    "build_stages",
    "refusals",
]
