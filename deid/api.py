"""The Python API: de-identify pydicom datasets in memory, with the stages ``deid run`` uses.

>>> import deid
>>> result = deid.deidentify(ds, key=b"a secret key of 16+ bytes")
>>> result.status, result.dataset.PatientID

:class:`Pipeline` builds the profile and the stages once for many datasets; ``deid run`` itself
runs every file through a :class:`Pipeline` (:mod:`deid.process`), so the same key gives the
same values here as in a release.
"""

from __future__ import annotations

import copy
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from deid.config import RunConfig
from deid.header.profiles import Profile, load_profile
from deid.pseudonyms import Pseudonymizer
from deid.reader import (
    check_decoded_size,
    check_pixels,
    check_value_representations,
    is_media_directory,
    settle_transfer_syntax,
)
from deid.registry import BuildContext, build_stages
from deid.stage import Instance, Quarantined, Stage
from deid.writer import replace_file_meta

#: The two ends a dataset can reach through the API.
STATUSES = ("written", "quarantined")


@dataclass(frozen=True)
class Result:
    """What became of one dataset.

    Attributes
    ----------
    dataset
        The de-identified copy (fresh File Meta Information, as ``deid run`` writes it); ``None``
        when the dataset was quarantined.
    status
        ``"written"`` or ``"quarantined"``.
    reason
        Why it was quarantined (no PHI); empty when written.
    stages
        Names of the stages that changed it, in order.
    uid_pairs
        Original to new UIDs replaced in it.
    notes
        What the pixel stages did (regions masked, encoding), as the release manifest says it.
    """

    dataset: Dataset | None
    status: str
    reason: str = ""
    stages: tuple[str, ...] = ()
    uid_pairs: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


class Pipeline:
    """The profile and the stages of one configuration, built once, for many datasets.

    Parameters
    ----------
    key
        The secret key (at least 16 bytes; a string is encoded as UTF-8). The same key gives
        the same pseudonyms, UIDs and date shifts as ``deid run --key-file`` with that key.
    profile
        A shipped profile name (``basic``, ``research``) or the path of a site profile TOML.
    options
        PS3.15 options added to the profile's own, e.g. ``("retain_uids",)``.
    pixels
        The whole-image stage: ``"none"`` (the default here), ``"deform"`` or ``"dp-pix"``.
    text_mode
        Burned-in text: ``"all"``, ``"sensitive"``, or ``None`` for the per-modality default.
    text_fill
        What masked text becomes: ``"black"``, ``"background"`` or ``"test"``.
    header_only
        Run no pixel stage (images that may carry burned-in text are then quarantined).

    Raises
    ------
    deid.header.profiles.ProfileError
        If the profile or an option is unknown or the site profile is invalid.
    ValueError
        If the key is shorter than 16 bytes, or a stage cannot be built (ONNX Runtime missing,
        a model or rule file missing or invalid).
    """

    def __init__(
        self,
        *,
        key: bytes | str,
        profile: str = "basic",
        options: Iterable[str] = (),
        pixels: str = "none",
        text_mode: str | None = None,
        text_fill: str = "black",
        header_only: bool = False,
    ) -> None:
        secret = key.encode() if isinstance(key, str) else bytes(key)
        config = RunConfig(
            str(profile), tuple(options), secret, header_only=header_only, pixels=pixels,
            text_mode=text_mode, text_fill=text_fill,
        )
        self._build(config)

    @classmethod
    def from_config(cls, config: RunConfig) -> Pipeline:
        """The pipeline of a run configuration (what ``deid run`` builds in each worker).

        Raises
        ------
        deid.header.profiles.ProfileError, ValueError
            As :class:`Pipeline`.
        """
        pipeline = cls.__new__(cls)
        pipeline._build(config)
        return pipeline

    def _build(self, config: RunConfig) -> None:
        self.config = config
        self.profile: Profile = load_profile(config.profile, config.options)
        self.pseudo = Pseudonymizer(config.key)
        self.stages: tuple[Stage, ...] = build_stages(config, BuildContext(self.profile, self.pseudo))

    def check(self, ds: Dataset, size: int = sys.maxsize) -> None:
        """The checks of a read dataset before the stages: its transfer syntax named, its
        elements' value representations sound, its decoded size bounded, its native pixel data
        complete (``size``: the file's length).

        Raises
        ------
        Quarantined
            If the dataset cannot be made safe as it is.
        """
        settle_transfer_syntax(ds)
        check_value_representations(ds)
        check_decoded_size(ds, self.config.max_object_size)
        check_pixels(ds, size)

    def apply(self, ds: Dataset) -> Instance:
        """Run the stages on ``ds`` in place.

        Returns
        -------
        Instance
            ``ds`` with what the stages recorded of it.

        Raises
        ------
        Quarantined
            If a stage cannot make the dataset safe (``ds`` is then partly changed: drop it).
        """
        instance = Instance(ds)
        for stage in self.stages:
            stage(instance)
        return instance

    def deidentify(self, dataset: Dataset) -> Result:
        """De-identify a copy of ``dataset``; ``dataset`` itself is not changed.

        Parameters
        ----------
        dataset
            A dataset as pydicom reads it (``dcmread``), or built in memory (then taken as
            Explicit VR Little Endian when its file meta names no transfer syntax).

        Returns
        -------
        Result
            The de-identified copy, or ``None`` and the reason when it is quarantined. Never
            raises for a bad dataset: like ``deid run``, anything unexpected quarantines it.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's warnings quote values, which may be PHI
            try:
                ds = _copy(dataset)
                if is_media_directory(ds):
                    raise Quarantined("DICOMDIR: a media directory, not an object to de-identify")
                self.check(ds)
                instance = self.apply(ds)
                replace_file_meta(ds)  # type: ignore[arg-type]
            except Quarantined as exc:
                return Result(None, "quarantined", str(exc))
            except Exception as exc:  # noqa: BLE001 - fail closed on anything unexpected
                return Result(None, "quarantined", f"internal error ({type(exc).__name__}); nothing written")
        return Result(
            ds, "written", "", tuple(instance.stages),
            dict(instance.header.uid_pairs) if instance.header else {}, tuple(instance.notes),
        )

    def describe(self) -> list[str]:
        """One line per stage: its name and what it does."""
        return [f"{stage.name}: {stage.describe()}" for stage in self.stages]


def _copy(dataset: Dataset) -> Dataset:
    """A deep copy of ``dataset`` with file meta that names a transfer syntax."""
    ds = copy.deepcopy(dataset)
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if not hasattr(ds, "preamble"):
        ds.preamble = None
    return ds


def deidentify(
    dataset: Dataset,
    *,
    key: bytes | str,
    profile: str = "basic",
    options: Iterable[str] = (),
    pixels: str = "none",
    text_mode: str | None = None,
) -> Result:
    """De-identify a copy of one pydicom dataset as ``deid run`` would.

    For many datasets build one :class:`Pipeline` and call its :meth:`~Pipeline.deidentify`:
    this function builds the profile and the stages anew on every call.

    Parameters
    ----------
    dataset
        The dataset; it is not changed.
    key
        The secret key (at least 16 bytes; a string is encoded as UTF-8).
    profile
        A shipped profile name or the path of a site profile TOML.
    options
        PS3.15 options added to the profile's own.
    pixels
        The whole-image stage: ``"none"``, ``"deform"`` or ``"dp-pix"``.
    text_mode
        Burned-in text: ``"all"``, ``"sensitive"`` or ``None`` (per modality).

    Returns
    -------
    Result
        ``result.dataset`` (the copy, ``None`` when quarantined), ``status``, ``reason``,
        ``stages``, ``uid_pairs`` and ``notes``.

    Raises
    ------
    deid.header.profiles.ProfileError
        If the profile or an option is unknown.
    ValueError
        If the key is too short or a stage cannot be built.
    """
    pipeline = Pipeline(key=key, profile=profile, options=options, pixels=pixels, text_mode=text_mode)
    return pipeline.deidentify(dataset)


__all__ = ["Pipeline", "Result", "deidentify", "STATUSES"]
