"""The learned deformation stage: warp eligible radiographs with the exported ONNX generator.

The graph (models/deform.onnx, metadata in models/deform.json) takes ``image`` float32
[1, 1, height, width] in [0, 1], MONOCHROME2, and returns ``warped`` of the same shape; it
downsizes, runs the generator, upsamples the displacement and warps at full resolution itself.
This stage maps stored values to [0, 1] and back (:mod:`deid.pixels.derive`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deid.pixels.derive import WholeImageStage
from deid.pixels.eligibility import Eligibility, load_eligibility
from deid.pseudonyms import Pseudonymizer
from deid.shipped import default_model, model_privacy, privacy_summary
from deid.stage import Instance

INPUT, NOISE, OUTPUT = "image", "noise", "warped"
#: Keys the metadata file must hold: of a learned generator, and of a keyed random transform.
METADATA_KEYS = ("name", "preset", "mu", "input_size", "sha256")
KEYED_METADATA_KEYS = ("name", "magnitudes", "noise_size", "sha256")

_SESSIONS: dict[tuple[str, str], tuple[Any, str]] = {}
_LOCK = threading.Lock()


#: The domain of the run key's digest that seeds a keyed transform's noise.
NOISE_DOMAIN = "deform"


def keyed_noise(pseudo: Pseudonymizer, uid: str, size: int) -> np.ndarray:
    """One image's transform noise: ``size`` values uniform in [-1, 1] (float32) from a numpy
    generator seeded by the run key's HMAC-SHA256 of the SOP Instance UID ``uid``, so the same key
    and object always draw the same values and nobody without the key can draw them."""
    digest = pseudo.digest(NOISE_DOMAIN, uid)
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(digest, "big")))
    return rng.uniform(-1.0, 1.0, size).astype(np.float32)


@dataclass(frozen=True)
class ModelInfo:
    """An exported deformation model and what its metadata file says of it."""

    path: Path
    name: str
    preset: str
    mu: float
    input_size: int
    sha256: str
    privacy: dict | None = None
    #: A keyed random transform's magnitudes (None for a learned generator) and noise length.
    magnitudes: dict | None = None
    noise_size: int = 0

    def settings(self) -> str:
        """What the model does, in a few words."""
        if self.magnitudes is not None:
            m = self.magnitudes
            return (f"keyed random transform: rotation {m['rotation']:g} deg, scale {m['scale']:g}, "
                    f"shift {m['shift']:g}, elastic {m['elastic']:g}, intensity {m['intensity']:g}")
        return f"mu={self.mu:g}"


def load_model_info(path: Path) -> ModelInfo:
    """Read the metadata beside ``path`` (same name, ``.json``) and check it names the file.

    Raises
    ------
    ValueError
        If the model or its metadata is missing or unreadable, a key is missing, or the file's
        SHA-256 is not the one the metadata gives.
    """
    metadata = path.with_suffix(".json")
    if not path.is_file():
        raise ValueError(f"deformation model {path} not found: pass --deform-model, or choose --pixels none")
    try:
        info = json.loads(metadata.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the deformation model's metadata {metadata}: {exc}") from None
    keyed = info.get("keyed") is True
    missing = [key for key in (KEYED_METADATA_KEYS if keyed else METADATA_KEYS) if key not in info]
    if missing:
        raise ValueError(f"deformation model metadata {metadata} lacks {', '.join(missing)}")
    if hashlib.sha256(path.read_bytes()).hexdigest() != info["sha256"]:
        raise ValueError(f"deformation model {path} does not match the sha256 in {metadata.name}")
    if keyed:
        return ModelInfo(path, str(info["name"]), "keyed", 0.0, 0, str(info["sha256"]), model_privacy(path),
                         dict(info["magnitudes"]), int(info["noise_size"]))
    return ModelInfo(path, str(info["name"]), str(info["preset"]), float(info["mu"]), int(info["input_size"]),
                     str(info["sha256"]), model_privacy(path))


def session(model: ModelInfo) -> tuple[Any, str]:
    """The process's ONNX Runtime session for ``model`` and the provider it runs on.

    Built once per process and model: CUDA first when ONNX Runtime offers it, else CPU; one
    thread and deterministic kernels, so the same input gives the same output.
    """
    key = (str(model.path.resolve()), model.sha256)
    with _LOCK:
        if key not in _SESSIONS:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            options.use_deterministic_compute = True
            options.log_severity_level = 3
            providers = ["CPUExecutionProvider"]
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            created = ort.InferenceSession(key[0], options, providers=providers)
            _SESSIONS[key] = (created, created.get_providers()[0])
        return _SESSIONS[key]


class DeformStage(WholeImageStage):
    """Warp eligible radiographs with the learned deformation, or with a keyed random transform.

    A keyed model's graph takes a second input, ``noise``, drawn per object from the run's key
    and the object's (new) SOP Instance UID (:func:`keyed_noise`): the same key gives the same
    pixels, and nobody without the key can replay the transform.

    Parameters
    ----------
    model
        The ONNX model; default :func:`default_model`. Its metadata lies beside it (``.json``).
    eligibility
        Which objects are changed; default the shipped rules/pixel/deform.toml.
    pseudo
        The run's key; required by a keyed model.

    Raises
    ------
    ValueError
        If ONNX Runtime is missing, or the model is missing, does not match its metadata, cannot
        be loaded or does not have the ``image`` -> ``warped`` interface.
    """

    name = "deform"

    def __init__(self, model: Path | None = None, eligibility: Eligibility | None = None,
                 pseudo: Pseudonymizer | None = None) -> None:
        if importlib.util.find_spec("onnxruntime") is None:
            raise ValueError(
                "the deformation stage needs ONNX Runtime: pip install 'deid-dicom[cpu]' (or [gpu]), "
                "or run with --pixels none"
            )
        super().__init__(eligibility or load_eligibility())
        self.model = load_model_info(model or default_model())
        try:
            self.session, self.provider = session(self.model)
        except Exception as exc:  # noqa: BLE001 - any loader failure is a configuration error
            raise ValueError(f"cannot load deformation model {self.model.path}: {type(exc).__name__}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        expected = [INPUT, NOISE] if self.model.magnitudes is not None else [INPUT]
        if [i.name for i in inputs] != expected or [o.name for o in outputs] != [OUTPUT] or len(inputs[0].shape) != 4:
            raise ValueError(f"deformation model {self.model.path} does not take {' and '.join(expected)} "
                             f"to {OUTPUT!r}")
        if self.model.magnitudes is not None:
            if list(inputs[1].shape) != [1, self.model.noise_size]:
                raise ValueError(f"deformation model {self.model.path} takes noise {inputs[1].shape}, "
                                 f"not [1, {self.model.noise_size}] as its metadata says")
            if pseudo is None:
                raise ValueError("a keyed deformation model needs the run's key")
        self.pseudo = pseudo

    def describe(self) -> str:
        return (
            f"warp {self.eligibility.describe()} radiographs with the deformation "
            f"{self.model.name} ({self.model.settings()}, on {self.provider}; "
            f"{privacy_summary(self.model.privacy)}); re-encode losslessly"
        )

    def transform(self, image: np.ndarray, item: Instance) -> np.ndarray:
        feed = {INPUT: image[np.newaxis, np.newaxis]}
        if self.pseudo is not None and self.model.magnitudes is not None:
            feed[NOISE] = keyed_noise(self.pseudo, str(item.ds.SOPInstanceUID), self.model.noise_size)[np.newaxis]
        return self.session.run([OUTPUT], feed)[0][0, 0]

    def derivation(self) -> str:
        kind = "keyed random deformation" if self.model.magnitudes is not None else "learned deformation"
        return f"deid: {kind} ({self.model.name}, {self.model.settings()})"

    def note(self) -> str:
        privacy = self.model.privacy
        measured = (f"re-ID AUC {privacy['reid_auc']:.3f} (real {privacy['real_reid_auc']:.3f})" if privacy
                    else "no measured privacy")
        return f"deformation {self.model.name} {self.model.settings()} {measured} on {self.provider}"
