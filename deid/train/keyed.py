"""A keyed random transform: smooth random displacement and intensity, drawn per image from the run's key.

Each image gets its own parameters, drawn from a numpy generator seeded by HMAC(run key, SOP
Instance UID) (:func:`deid.pixels.deform.keyed_noise`), as uniform noise in [-1, 1]. The transform
(:class:`KeyedTransform`) scales that noise by its magnitudes:

* a random affine map: rotation, isotropic scale and shift, in the image's physical proportions;
* a low-frequency elastic field: a ``grid`` x ``grid`` control grid of displacements, upsampled
  bilinearly to the image;
* optionally a smooth multiplicative intensity field from an ``intensity_grid`` control grid.

An attacker who knows the method but not the key cannot replay the transform; the same key gives
the same output (a nightly export). The layout of the noise vector: rotation, scale, shift x,
shift y, then the elastic grid (x then y, row-major), then the intensity grid.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deid.train.networks import identity_grid


@dataclass(frozen=True)
class Magnitudes:
    """The largest change of each kind.

    Attributes
    ----------
    rotation
        Degrees.
    scale
        Fraction (0.08: 0.92-1.08).
    shift
        Fraction of the image's side, per axis.
    elastic
        Largest elastic displacement at a control point, fraction of the image's side.
    grid
        Side of the elastic control grid.
    intensity
        Largest relative change of brightness at a control point (0.2: x0.8-x1.2).
    intensity_grid
        Side of the intensity control grid.
    """

    rotation: float = 8.0
    scale: float = 0.08
    shift: float = 0.06
    elastic: float = 0.0
    grid: int = 4
    intensity: float = 0.0
    intensity_grid: int = 3

    @property
    def noise_size(self) -> int:
        """Length of the noise vector that one image's transform takes."""
        return 4 + 2 * self.grid**2 + self.intensity_grid**2

    def label(self) -> str:
        """A short name, e.g. ``r8-s0.08-t0.06-e0.03g4-i0.1g3``."""
        name = f"r{self.rotation:g}-s{self.scale:g}-t{self.shift:g}"
        if self.elastic:
            name += f"-e{self.elastic:g}g{self.grid}"
        if self.intensity:
            name += f"-i{self.intensity:g}g{self.intensity_grid}"
        return name

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def parse(cls, label: str) -> Magnitudes:
        """The magnitudes that :meth:`label` names (its parts in any order, each optional).

        Raises
        ------
        ValueError
            If a part is not one of ``r<deg>``, ``s<f>``, ``t<f>``, ``e<f>g<n>``, ``i<f>g<n>``.
        """
        values: dict = {"rotation": 0.0, "scale": 0.0, "shift": 0.0}
        for part in label.split("-"):
            match = re.fullmatch(r"([rste])([0-9.]+)|([ei])([0-9.]+)g([0-9]+)", part)
            if match is None:
                raise ValueError(f"cannot read {part!r} of the transform {label!r} "
                                 "(e.g. r8-s0.08-t0.06-e0.04g4-i0.2g3)")
            if match.group(1):
                key = {"r": "rotation", "s": "scale", "t": "shift", "e": "elastic"}[match.group(1)]
                values[key] = float(match.group(2))
            elif match.group(3) == "e":
                values.update(elastic=float(match.group(4)), grid=int(match.group(5)))
            else:
                values.update(intensity=float(match.group(4)), intensity_grid=int(match.group(5)))
        return cls(**values)


class KeyedTransform(nn.Module):
    """The transform for images of any size: ``forward(image, noise)``.

    Parameters
    ----------
    magnitudes
        What the noise in [-1, 1] is scaled to.

    ``image`` (n, 1, h, w) in [0, 1]; ``noise`` (n, :attr:`Magnitudes.noise_size`) in [-1, 1].
    Bilinear sampling with border padding (``align_corners=True``); the output is clipped to [0, 1].
    """

    def __init__(self, magnitudes: Magnitudes) -> None:
        super().__init__()
        self.magnitudes = magnitudes

    def forward(self, image: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        m = self.magnitudes
        n, _, h, w = image.shape
        grid = identity_grid(n, h, w, image)
        x, y = grid[..., 0], grid[..., 1]
        # Physical proportions: a rotation turns the image, not its normalised square.
        xs = torch.arange(w, dtype=image.dtype, device=image.device)
        ys = torch.arange(h, dtype=image.dtype, device=image.device)
        ratio = (ys[-1:] / xs[-1:]).view(1, 1, 1)  # (h - 1) / (w - 1), symbolic in an export
        angle = (noise[:, 0] * math.radians(m.rotation)).view(n, 1, 1)
        scale = (1.0 + noise[:, 1] * m.scale).view(n, 1, 1)
        shift_x = (noise[:, 2] * 2 * m.shift).view(n, 1, 1)
        shift_y = (noise[:, 3] * 2 * m.shift).view(n, 1, 1)
        cos, sin = torch.cos(angle), torch.sin(angle)
        source_x = scale * (cos * x - sin * y * ratio) + shift_x
        source_y = scale * (sin * x / ratio + cos * y) + shift_y
        sample = torch.stack([source_x, source_y], dim=-1)
        g = m.grid
        if m.elastic:
            control = noise[:, 4:4 + 2 * g * g].reshape(n, 2, g, g) * (2 * m.elastic)
            field = F.interpolate(control, size=(h, w), mode="bilinear", align_corners=True)
            sample = sample + field.permute(0, 2, 3, 1)
        out = F.grid_sample(image, sample, mode="bilinear", padding_mode="border", align_corners=True)
        if m.intensity:
            k = m.intensity_grid
            start = 4 + 2 * g * g
            control = noise[:, start:start + k * k].reshape(n, 1, k, k) * m.intensity
            gain = 1.0 + F.interpolate(control, size=(h, w), mode="bilinear", align_corners=True)
            out = out * gain
        return out.clamp(0.0, 1.0)


def identifiers(split_name: str, count: int) -> list[str]:
    """Stand-ins for SOP Instance UIDs of a split's images (the PNG set has none)."""
    return [f"{split_name}/{i}" for i in range(count)]


def keyed_anonymizer(magnitudes: Magnitudes, key: bytes, names: dict[int, list[str]] | None = None):
    """An anonymizer for the protocol: each image's noise drawn from HMAC(``key``, its identifier).

    ``names`` maps a stack's length to its identifiers; a stack of unknown length gets
    ``"<length>/<index>"``, so that every split (they differ in length) is keyed apart.
    """
    from deid.pixels.deform import keyed_noise
    from deid.pseudonyms import Pseudonymizer

    transform = KeyedTransform(magnitudes)
    pseudo = Pseudonymizer(key)

    @torch.no_grad()
    def anonymize(images: np.ndarray) -> np.ndarray:
        ids = (names or {}).get(len(images)) or identifiers(str(len(images)), len(images))
        noise = np.stack([keyed_noise(pseudo, uid, magnitudes.noise_size) for uid in ids])
        out = []
        for b in range(0, len(images), 128):
            x = torch.from_numpy(np.ascontiguousarray(images[b:b + 128], np.float32)).unsqueeze(1)
            out.append(transform(x, torch.from_numpy(noise[b:b + 128])).squeeze(1).numpy())
        return np.concatenate(out)

    return anonymize
