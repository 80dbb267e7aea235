"""Re-identification attackers: fixed image similarities and a learned metric embedding.

Every attacker turns a stack of images into one unit vector per image; the score of a pair is the
dot product of its two vectors (a cosine similarity). The fixed ones need no training:

* ``ncc16``, ``ncc32``, ``ncc64``: normalised cross-correlation of the images area-downsized to
  16, 32 or 64 px (the vector is the downsized image, centred and scaled to unit length);
* ``hog64``: histograms of oriented gradients at 64 px (8 px cells, 9 unsigned orientations,
  square-rooted and normalised per cell);
* ``ncc32-both``: ``ncc32`` after the attacker has run the (public) anonymizer on its own real
  image too, so that both sides of a pair went through it.

The learned attacker is :mod:`deid.train.fusion`; one of its channels is the metric of
:func:`train_metric_attacker`, which starts as ``ncc32``
(:class:`MetricEmbedding`), trained with a symmetric InfoNCE loss on genuine pairs of the train
split (first image anonymized, second real, the linkage the test scores), in batches of one source,
and stopped on the validation split's AUC. :func:`ncc_torch` is
``ncc<size>`` in torch, differentiable, for training a generator against it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import structlog
import torch
import torch.nn.functional as F
from torch import nn

from deid.train.data import Split
from deid.train.loops import autocast, device, tensor, to_numpy
from deid.train.metrics import roc_auc
from deid.train.presets import Preset

log = structlog.get_logger("deid.train")

Features = Callable[[np.ndarray], np.ndarray]


def area_downsize(images: np.ndarray, size: int) -> np.ndarray:
    """Means of ``images`` (n, s, s) over square cells, to (n, size, size); ``s`` a multiple of ``size``."""
    n, side, _ = images.shape
    factor = side // size
    if factor * size != side:
        raise ValueError(f"images of {side} px cannot be area-downsized to {size} px")
    return images.reshape(n, size, factor, size, factor).mean(axis=(2, 4))


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = vectors - vectors.mean(axis=1, keepdims=True)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def ncc_features(images: np.ndarray, size: int) -> np.ndarray:
    """Unit vectors whose dot products are the normalised cross-correlations at ``size`` px."""
    small = area_downsize(np.asarray(images, np.float64), size)
    return _unit_rows(small.reshape(len(small), -1))


def hog_features(images: np.ndarray, size: int = 64, cell: int = 8, bins: int = 9) -> np.ndarray:
    """Histograms of oriented gradients at ``size`` px as unit vectors."""
    small = area_downsize(np.asarray(images, np.float64), size)
    gy, gx = np.gradient(small, axis=(1, 2))
    magnitude = np.hypot(gx, gy)
    orientation = np.mod(np.arctan2(gy, gx), np.pi)
    index = np.minimum((orientation / np.pi * bins).astype(int), bins - 1)
    n, cells = len(small), size // cell
    histogram = np.zeros((n, cells, cells, bins))
    for b in range(bins):
        weighted = np.where(index == b, magnitude, 0.0)
        histogram[..., b] = weighted.reshape(n, cells, cell, cells, cell).sum(axis=(2, 4))
    histogram = np.sqrt(histogram / np.maximum(histogram.sum(axis=-1, keepdims=True), 1e-12))
    return _unit_rows(histogram.reshape(n, -1))


def _gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (n, s, s) with edge replication."""
    radius = int(3 * sigma + 0.5)
    axis = np.arange(-radius, radius + 1)
    kernel = np.exp(-axis**2 / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(images, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    side = images.shape[1]
    rows = sum(k * padded[:, i:i + side, :] for i, k in enumerate(kernel))
    return sum(k * rows[:, :, i:i + side] for i, k in enumerate(kernel))


def highpass_features(images: np.ndarray, size: int = 32, sigma: float = 2.0) -> np.ndarray:
    """NCC of the ``size`` px thumbnails minus their Gaussian blur (``sigma`` px): blind to smooth
    changes of brightness."""
    small = area_downsize(np.asarray(images, np.float64), size)
    detail = small - _gaussian_blur(small, sigma)
    return _unit_rows(detail.reshape(len(detail), -1))


#: The fixed attackers scored against real test images, by name.
BASELINES: dict[str, Features] = {
    "ncc16": lambda images: ncc_features(images, 16),
    "ncc32": lambda images: ncc_features(images, 32),
    "ncc64": lambda images: ncc_features(images, 64),
    "hog64": hog_features,
    "ncc32-highpass": highpass_features,
}

#: The registration attacker's search: rotations (degrees), scales, shifts (fraction of the side).
REGISTRATION_GRID = ((-12.0, -6.0, 0.0, 6.0, 12.0), (0.9, 1.0, 1.1), (-0.08, -0.04, 0.0, 0.04, 0.08))


def registration_grid(rotation: float = 0.0, scale: float = 0.0, shift: float = 0.0) -> tuple:
    """:data:`REGISTRATION_GRID` widened to cover a public transform's largest rotation (degrees),
    scale and shift (fractions), with as many steps (5 rotations, 3 scales, 5 shifts a side)."""
    rotations, scales, shifts = REGISTRATION_GRID
    r = max(rotation, rotations[-1])
    s = max(scale, scales[-1] - 1.0)
    t = max(shift, shifts[-1])
    return tuple(np.linspace(-r, r, 5)), (1.0 - s, 1.0, 1.0 + s), tuple(np.linspace(-t, t, 5))


def _affine(parameters: torch.Tensor) -> torch.Tensor:
    """(n, 2, 3) affine maps from (n, 4) rotation (radians), log scale, shift x, shift y."""
    angle, scale = parameters[:, 0], parameters[:, 1].exp()
    cos, sin = scale * angle.cos(), scale * angle.sin()
    return torch.stack([torch.stack([cos, -sin, parameters[:, 2]], 1), torch.stack([sin, cos, parameters[:, 3]], 1)], 1)


def _unit_torch(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1)
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)


def align_to_templates(images: np.ndarray, sources: np.ndarray, templates: dict[str, np.ndarray], size: int = 32,
                       steps: int = 80) -> np.ndarray:
    """Each image (n, s, s) moved by the affine map (rotation, scale, shift) that best correlates
    its ``size`` px thumbnail with its source's template (``size`` px): a coarse search over
    rotations and shifts, then Adam on the correlation. Returns the aligned thumbnails at
    ``size`` px."""
    small = torch.from_numpy(area_downsize(np.asarray(images, np.float32), 2 * size)).unsqueeze(1).float()
    target = torch.from_numpy(np.stack([templates[s] for s in sources]).astype(np.float32))
    target = _unit_torch(target)

    def moved(parameters: torch.Tensor) -> torch.Tensor:
        sample = F.affine_grid(_affine(parameters), list(small.shape), align_corners=True)
        return F.avg_pool2d(F.grid_sample(small, sample, mode="bilinear", padding_mode="border", align_corners=True), 2)

    with torch.no_grad():
        best, best_score = torch.zeros(len(small), 4), torch.full((len(small),), -2.0)
        for angle in np.radians([-12.0, -6.0, 0.0, 6.0, 12.0]):
            for dx in (-0.1, 0.0, 0.1):
                for dy in (-0.1, 0.0, 0.1):
                    start = torch.tensor([angle, 0.0, dx, dy], dtype=torch.float32).expand(len(small), 4)
                    score = (_unit_torch(moved(start)) * target).sum(1)
                    better = score > best_score
                    best[better], best_score[better] = start[better], score[better]
    parameters = best.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([parameters], lr=0.01)
    for _ in range(steps):
        loss = -(_unit_torch(moved(parameters)) * target).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return moved(parameters).squeeze(1).numpy().astype(np.float64)


def aligned_scores(anonymized: np.ndarray, real: np.ndarray, sources: np.ndarray, pairs: np.ndarray,
                   size: int = 32) -> np.ndarray:
    """``ncc<size>`` after both images of a pair were aligned (:func:`align_to_templates`) to the
    mean real image of their source, which the attacker computes from its own real images."""
    thumbnails = area_downsize(np.asarray(real, np.float64), size)
    templates = {s: thumbnails[sources == s].mean(axis=0) for s in np.unique(sources)}
    first = _unit_rows(align_to_templates(anonymized, sources, templates, size).reshape(len(real), -1))
    second = _unit_rows(align_to_templates(real, sources, templates, size).reshape(len(real), -1))
    return pair_scores(first, second, pairs)


def _search_maps(grid: tuple) -> list[tuple[float, float, float, float]]:
    """Every map of a registration grid as (rotation in radians, log scale, shift x, shift y) in
    normalised units."""
    rotations, scales, shifts = grid
    return [(float(np.radians(r)), float(np.log(s)), 2 * dx, 2 * dy) for r in rotations for s in scales
            for dx in shifts for dy in shifts]


def _search_input(anonymized: np.ndarray, size: int) -> torch.Tensor:
    return torch.from_numpy(area_downsize(np.asarray(anonymized, np.float32), 2 * size)).unsqueeze(1).float()


def registration_thumbnails(anonymized: np.ndarray, size: int = 32, grid: tuple = REGISTRATION_GRID) -> np.ndarray:
    """Unit vectors (n, maps, size * size) of each image under every affine map of ``grid``: the
    image resampled at twice ``size`` (bilinear, border), then area-downsized."""
    small = _search_input(anonymized, size)
    maps = _search_maps(grid)
    out = np.empty((len(small), len(maps), size * size), np.float32)
    with torch.no_grad():
        for index, affine_map in enumerate(maps):
            theta = _affine(torch.tensor([affine_map], dtype=torch.float32)).expand(len(small), 2, 3)
            sample = F.affine_grid(theta, list(small.shape), align_corners=True)
            moved = F.grid_sample(small, sample, mode="bilinear", padding_mode="border", align_corners=True)
            out[:, index] = _unit_torch(F.avg_pool2d(moved, 2)).numpy()
    return out


def registration_search(thumbnails: np.ndarray, real_vectors: np.ndarray,
                        chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """For every (anonymized, real) pair of the two stacks: the best correlation over the maps of
    :func:`registration_thumbnails` and the index of that map, each (n anonymized, n real)."""
    n, maps, width = thumbnails.shape
    real = np.asarray(real_vectors, np.float32)
    best = np.empty((n, len(real)), np.float32)
    best_map = np.empty((n, len(real)), np.int64)
    rows = max(1, chunk // max(maps, 1))
    for start in range(0, n, rows):
        scores = (thumbnails[start:start + rows].reshape(-1, width) @ real.T).reshape(-1, maps, len(real))
        best_map[start:start + rows] = scores.argmax(axis=1)
        best[start:start + rows] = scores.max(axis=1)
    return best, best_map


def registration_scores(anonymized: np.ndarray, real: np.ndarray, pairs: np.ndarray, size: int = 32,
                        grid: tuple = REGISTRATION_GRID, refine_steps: int = 30, chunk: int = 8192) -> np.ndarray:
    """``ncc<size>`` of each pair maximised over affine maps of its anonymized image.

    First a search (:func:`registration_search`): every rotation, scale and shift of ``grid``
    applied to the anonymized stack and correlated with every real thumbnail. Then each pair's best
    map is refined by ``refine_steps`` of Adam on that pair's correlation (a pairwise
    registration). The score is the best correlation found.
    """
    real_vectors = ncc_features(real, size).astype(np.float32)
    maps = _search_maps(grid)
    best, best_map = registration_search(registration_thumbnails(anonymized, size, grid), real_vectors)
    result = torch.from_numpy(best[pairs[:, 0], pairs[:, 1]].copy())
    if not refine_steps or not len(pairs):
        return result.numpy().astype(np.float64)
    small = _search_input(anonymized, size)
    targets = torch.from_numpy(real_vectors)
    first, second = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
    chosen_map = torch.from_numpy(best_map)
    table = torch.tensor(maps, dtype=torch.float32)
    for start in range(0, len(pairs), chunk):
        i, j = first[start:start + chunk], second[start:start + chunk]
        parameters = table[chosen_map[i, j]].clone().requires_grad_(True)
        optimiser = torch.optim.Adam([parameters], lr=0.01)
        for _ in range(refine_steps):
            loss = -_pair_correlation(small[i], targets[j], parameters, size).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            refined = _pair_correlation(small[i], targets[j], parameters, size)
            result[start:start + chunk] = torch.maximum(result[start:start + chunk], refined)
    return result.numpy().astype(np.float64)


def _pair_correlation(images: torch.Tensor, targets: torch.Tensor, parameters: torch.Tensor, size: int) -> torch.Tensor:
    """Correlation of each image (n, 1, s, s) moved by its affine map, sampled at ``size`` px,
    with its target unit vector."""
    sample = F.affine_grid(_affine(parameters), [len(images), 1, size, size], align_corners=True)
    moved = F.grid_sample(images, sample, mode="bilinear", padding_mode="border", align_corners=True)
    return (_unit_torch(moved) * targets).sum(1)


#: The fixed attacker that anonymizes its own image too.
BOTH_ANONYMIZED = ("ncc32-both", BASELINES["ncc32"])


def pair_scores(first: np.ndarray, second: np.ndarray, pairs: np.ndarray, batch: int = 65_536) -> np.ndarray:
    """``first[i] . second[j]`` for each pair ``(i, j)``."""
    return np.concatenate([
        np.einsum("ij,ij->i", first[pairs[b:b + batch, 0]], second[pairs[b:b + batch, 1]])
        for b in range(0, len(pairs), batch)
    ]) if len(pairs) else np.zeros(0)


def ncc_torch(x: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`ncc_features` in torch: (n, 1, s, s) to unit vectors (n, size * size), differentiable."""
    small = F.adaptive_avg_pool2d(x, size).flatten(1)
    small = small - small.mean(dim=1, keepdim=True)
    return small / small.norm(dim=1, keepdim=True).clamp(min=1e-8)


class MetricEmbedding(nn.Module):
    """Normalised cross-correlation at ``size`` px with learned per-pixel weights: the embedding of
    an image is its :func:`ncc_torch` vector times the weights, scaled to unit length. The weights
    start at one, so an untrained attacker is ``ncc<size>``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.weight = nn.Parameter(torch.ones(size * size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.weight * ncc_torch(x, self.size), dim=1)


def _patient_batches(split: Split, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Every genuine pair of ``split`` once, in random direction, in batches of one source that hold
    at most one pair of each patient (the other patients' images are the negatives, as impostors
    are scored within a source; another pair of the same patient would be a false negative)."""
    pairs = split.genuine_pairs()
    batches = []
    for source in np.unique(split.sources):
        waiting = pairs[split.sources[pairs[:, 0]] == source]
        waiting = waiting[rng.permutation(len(waiting))]
        while len(waiting):
            taken: list[np.ndarray] = []
            seen: set[str] = set()
            deferred: list[np.ndarray] = []
            for pair in waiting:
                patient = split.patients[pair[0]]
                if patient in seen or len(taken) == batch:
                    deferred.append(pair)
                else:
                    taken.append(pair if rng.random() < 0.5 else pair[::-1])
                    seen.add(patient)
            batches.append(np.array(taken))
            waiting = np.array(deferred, dtype=np.int64).reshape(-1, 2)
    order = rng.permutation(len(batches))
    return [batches[i] for i in order if len(batches[i]) > 1]


@torch.no_grad()
def embed(model: MetricEmbedding, images: np.ndarray, batch: int = 256) -> np.ndarray:
    model.eval()
    x = tensor(np.asarray(images, np.float32))
    with autocast():
        return to_numpy(torch.cat([model(x[b:b + batch]) for b in range(0, len(x), batch)])).astype(np.float64)


def within_source_auc(split: Split, first: np.ndarray, second: np.ndarray) -> float:
    """Pooled AUC of within-source pairs scored ``first[i] . second[j]``."""
    pairs, genuine = split.all_within_source_pairs()
    return roc_auc(genuine, pair_scores(first, second, pairs))


def train_metric_attacker(preset: Preset, anon_train: Split, real_train: Split, anon_val: Split,
                          real_val: Split, seed: int, temperature: float = 0.1) -> MetricEmbedding:
    """A fresh learned attacker for one anonymizer.

    Parameters
    ----------
    anon_train, real_train
        The train split anonymized and as it is (same order): a pair's first image is taken
        anonymized, its second real.
    anon_val, real_val
        The validation split alike; the epoch with the highest within-source AUC is kept.
    seed
        Seeds the batches.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = MetricEmbedding(preset.attacker_size).to(device())
    optimiser = torch.optim.Adam(model.parameters(), lr=preset.critic_lr, weight_decay=1e-4)
    x_anon = F.adaptive_avg_pool2d(tensor(anon_train.images), preset.attacker_size)
    x_real = F.adaptive_avg_pool2d(tensor(real_train.images), preset.attacker_size)
    best = within_source_auc(real_val, embed(model, anon_val.images), embed(model, real_val.images))
    best_state, waited = copy.deepcopy(model.state_dict()), 0
    for epoch in range(preset.attacker_epochs):
        model.train()
        for pairs in _patient_batches(real_train, preset.batch, rng):
            with autocast():
                e1 = model(x_anon[pairs[:, 0]]).float()
                e2 = model(x_real[pairs[:, 1]]).float()
            logits = e1 @ e2.T / temperature
            target = torch.arange(len(pairs), device=logits.device)
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        auc = within_source_auc(real_val, embed(model, anon_val.images), embed(model, real_val.images))
        log.info("epoch", network="metric attacker", epoch=epoch, val_auc=round(auc, 4))
        if auc > best:
            best, best_state, waited = auc, copy.deepcopy(model.state_dict()), 0
        else:
            waited += 1
            if waited >= preset.patience:
                break
    model.load_state_dict(best_state)
    return model.eval()
