"""Export a trained deformation as one ONNX graph for images of any size.

The graph takes ``image`` (1, 1, height, width) in [0, 1], downsizes it to the generator's input,
computes and smooths the displacement there, upsamples it and warps the full-resolution image
(GridSample, opset 20). Height and width stay symbolic; :func:`export` checks that they do and
that ONNX Runtime matches torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from deid.train.keyed import KeyedTransform
from deid.train.networks import Deformation

OPSET = 20
#: Sizes the parity check runs at: square, portrait, and a detector-sized landscape image.
CHECK_SIZES = ((256, 256), (1200, 1024), (2048, 2500))
TOLERANCE = 1e-4


def export(deformation: Deformation | KeyedTransform, path: Path) -> dict:
    """Write ``deformation`` to ``path`` and check it. A :class:`KeyedTransform` gets a second
    input, ``noise`` [1, noise size]: the per-image values in [-1, 1] that the run's key draws.

    Returns
    -------
    dict
        ``sha256`` of the file and the largest absolute difference from torch at each size.

    Raises
    ------
    RuntimeError
        If height or width were specialised, or ONNX Runtime and torch differ by more than
        :data:`TOLERANCE`.
    """
    from torch.export import Dim

    deformation = deformation.eval()
    example = torch.rand(1, 1, 300, 260, generator=torch.Generator().manual_seed(0))
    size = {"height": Dim("height", min=16, max=16384), "width": Dim("width", min=16, max=16384)}
    if isinstance(deformation, KeyedTransform):
        noise = torch.zeros(1, deformation.magnitudes.noise_size)
        program = torch.onnx.export(
            deformation, (example, noise), input_names=["image", "noise"], output_names=["warped"],
            dynamic_shapes={"image": {2: size["height"], 3: size["width"]}, "noise": None},
            opset_version=OPSET, external_data=False,
        )
    else:
        program = torch.onnx.export(
            deformation, (example,), input_names=["image"], output_names=["warped"],
            dynamic_shapes={"x": {2: size["height"], 3: size["width"]}},
            opset_version=OPSET, external_data=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    dims = [d.dim_param or d.dim_value for d in program.model_proto.graph.input[0].type.tensor_type.shape.dim]
    if dims != [1, 1, "height", "width"]:
        raise RuntimeError(f"the exported input shape was specialised: {dims}")
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=False)
    return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "parity": parity(deformation, path)}


def parity(deformation: Deformation | KeyedTransform, path: Path) -> dict[str, float]:
    """Largest absolute difference between ONNX Runtime and torch at :data:`CHECK_SIZES` (a
    keyed transform with random noise at each)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = {}
    rng = np.random.default_rng(0)
    for h, w in CHECK_SIZES:
        image = _radiograph_like(rng, h, w)
        inputs = {"image": image}
        with torch.no_grad():
            if isinstance(deformation, KeyedTransform):
                inputs["noise"] = rng.uniform(-1, 1, (1, deformation.magnitudes.noise_size)).astype(np.float32)
                expected = deformation(torch.from_numpy(image), torch.from_numpy(inputs["noise"])).numpy()
            else:
                expected = deformation(torch.from_numpy(image)).numpy()
        got = session.run(["warped"], inputs)[0]
        diff = float(np.abs(got - expected).max())
        if got.shape != image.shape or diff > TOLERANCE:
            raise RuntimeError(f"ONNX and torch differ at {h}x{w}: shape {got.shape}, max diff {diff:.2e}")
        out[f"{h}x{w}"] = diff
    return out


def _radiograph_like(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth structure plus noise, so that a warp shows in the pixels."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    image = 0.5 + 0.3 * np.sin(12 * xx) * np.cos(9 * yy) + 0.05 * rng.standard_normal((h, w))
    return np.clip(image, 0, 1).astype(np.float32)[None, None]
