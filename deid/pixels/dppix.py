"""DP-Pix (Fan 2018, "Image Pixelization with Differential Privacy"), the baseline PriCheXy-Net
compares with: the mean of each b×b cell plus Laplace noise of scale m/(b²·ε) on the [0, 1]
scale, clipped to [0, 1]. Pure numpy."""

from __future__ import annotations

import numpy as np

from deid.pixels.derive import WholeImageStage
from deid.pixels.eligibility import Eligibility, load_eligibility
from deid.pseudonyms import Pseudonymizer
from deid.stage import Instance


def dp_pix(image01: np.ndarray, block: int, epsilon: float, m: float, rng: np.random.Generator) -> np.ndarray:
    """Pixelize ``image01`` in ``block``×``block`` cells and add Laplace noise to each cell.

    Parameters
    ----------
    image01
        Values in [0, 1]; the last two axes are rows and columns, any axes before them are
        separate images (each cell of each image draws its own noise).
    block
        Cell side in pixels. Cells at the right and bottom edges may be smaller; their noise
        scale uses their own pixel count, so every cell keeps the guarantee.
    epsilon
        Privacy budget (smaller: more noise).
    m
        Number of pixels in which neighbouring images may differ.
    rng
        Source of the noise, e.g. ``numpy.random.default_rng(seed)``.

    Returns
    -------
    numpy.ndarray
        The pixelized, noisy image in [0, 1], of the shape of ``image01``; its float dtype, or
        float32 for integer input.

    Raises
    ------
    ValueError
        If ``block`` is below 1, ``epsilon`` or ``m`` not positive, or the image has fewer than
        two axes.
    """
    if block < 1 or epsilon <= 0 or m <= 0:
        raise ValueError("DP-Pix needs block >= 1, epsilon > 0 and m > 0")
    image = np.asarray(image01)
    if image.ndim < 2:
        raise ValueError("DP-Pix needs an image with rows and columns")
    *lead, height, width = image.shape
    rows, columns = -(-height // block), -(-width // block)
    padded = np.zeros((*lead, rows * block, columns * block))
    padded[..., :height, :width] = image
    sums = padded.reshape(*lead, rows, block, columns, block).sum(axis=(-3, -1))
    counts = np.outer(
        np.minimum(block, height - block * np.arange(rows)), np.minimum(block, width - block * np.arange(columns))
    )
    noisy = sums / counts + rng.laplace(0.0, m / (counts * epsilon), size=sums.shape)
    cells = np.clip(noisy, 0.0, 1.0)
    out = np.repeat(np.repeat(cells, block, axis=-2), block, axis=-1)[..., :height, :width]
    return out.astype(image.dtype if np.issubdtype(image.dtype, np.floating) else np.float32)


class DpPixStage(WholeImageStage):
    """DP-Pix on eligible radiographs, its noise seeded by the run's key and the object.

    The generator is seeded from HMAC-SHA256(key, the object's new SOP Instance UID), so the
    same key gives byte-identical output and another key other noise.

    Parameters
    ----------
    pseudo
        The run's key.
    block, epsilon, m
        See :func:`dp_pix`; the cell side is in pixels of the stored image (``deid run`` passes
        :data:`deid.registry.DP_PIX` unless told otherwise).
    eligibility
        Which objects are changed; default the shipped rules/pixel/deform.toml.
    """

    name = "dp-pix"

    def __init__(
        self,
        pseudo: Pseudonymizer,
        block: int,
        epsilon: float,
        m: float,
        eligibility: Eligibility | None = None,
    ) -> None:
        if block < 1 or epsilon <= 0 or m <= 0:
            raise ValueError("DP-Pix needs --dp-pix-block >= 1 and a positive --dp-pix-epsilon and --dp-pix-m")
        super().__init__(eligibility or load_eligibility())
        self.pseudo, self.block, self.epsilon, self.m = pseudo, block, epsilon, m

    def describe(self) -> str:
        return (
            f"DP-Pix (cells of {self.block} px, epsilon {self.epsilon:g}, m {self.m:g}, keyed noise) on "
            f"{self.eligibility.describe()} radiographs; re-encode losslessly"
        )

    def transform(self, image: np.ndarray, item: Instance) -> np.ndarray:
        seed = self.pseudo.digest("dp-pix", str(item.ds.SOPInstanceUID))
        return dp_pix(image, self.block, self.epsilon, self.m, np.random.default_rng(int.from_bytes(seed, "big")))

    def derivation(self) -> str:
        return f"deid: DP-Pix (b={self.block}, epsilon={self.epsilon:g}, m={self.m:g})"

    def note(self) -> str:
        return f"dp-pix b={self.block} eps={self.epsilon:g} m={self.m:g}"
