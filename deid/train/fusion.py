"""The learned attacker: a fusion of similarity channels, trained on one anonymizer's output.

A pair (anonymized image ``a``, real image ``b``) is described by each channel's similarity
(a cosine of two unit vectors, as the fixed attackers score) and by that similarity normalised
against the attacker's reference set, the train split, per side: ``z_a`` is its standard score
among the similarities of ``a`` to the real reference images of its source, ``z_b`` among those
of ``b`` to the anonymized reference images of its source (patients of the pair left out). A
linear scorer over these features, with a correction per source, is trained on the train split's
within-source pairs (first image anonymized, second real) with a logistic loss that weighs each
source's genuine and impostor pairs alike, and the step with the best validation AUC is kept.
Trained afresh for each anonymizer, it learns which channels survive it, and the reference set
seen through the anonymizer sets the normalisation.

Channels: normalised cross-correlation at 8-64 px, histograms of oriented gradients at three
scales, high-pass and gradient-magnitude correlation at 32 px, the grey-level histogram, the row
and column profile, and the per-pixel weighted cross-correlation (:func:`train_metric_attacker`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import structlog
import torch
import torch.nn.functional as F

from deid.train.attacks import (
    Features,
    MetricEmbedding,
    _unit_rows,
    area_downsize,
    embed,
    highpass_features,
    hog_features,
    ncc_features,
    train_metric_attacker,
)
from deid.train.data import Split
from deid.train.metrics import roc_auc
from deid.train.presets import Preset

log = structlog.get_logger("deid.train")


def _gradient(images: np.ndarray, size: int) -> np.ndarray:
    gy, gx = np.gradient(area_downsize(np.asarray(images, np.float64), size), axis=(1, 2))
    return _unit_rows(np.hypot(gx, gy).reshape(len(images), -1))


def _histogram(images: np.ndarray, size: int) -> np.ndarray:
    counts = np.stack([np.histogram(image, bins=size, range=(0.0, 1.0))[0] for image in images]).astype(np.float64)
    return _unit_rows(np.sqrt(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)))


def _profile(images: np.ndarray, size: int) -> np.ndarray:
    small = area_downsize(np.asarray(images, np.float64), size)
    return _unit_rows(np.concatenate([small.mean(axis=1), small.mean(axis=2)], axis=1))


#: ``(name, side it needs, unit vectors)`` of every fixed channel.
CHANNELS: tuple[tuple[str, int, Features], ...] = (
    *((f"ncc{s}", s, lambda x, s=s: ncc_features(x, s)) for s in (8, 16, 32, 64)),
    ("hog32-4", 32, lambda x: hog_features(x, 32, 4)),
    ("hog64-8", 64, lambda x: hog_features(x, 64, 8)),
    ("hog128-8", 128, lambda x: hog_features(x, 128, 8)),
    ("hog128-16", 128, lambda x: hog_features(x, 128, 16)),
    ("highpass32", 32, highpass_features),
    ("gradient32", 32, lambda x: _gradient(x, 32)),
    ("histogram", 1, lambda x: _histogram(x, 32)),
    ("profile", 64, lambda x: _profile(x, 64)),
)


def _gram_pairs(first: np.ndarray, second: np.ndarray, sources: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``first[i] . second[j]`` for within-source ``pairs``, through each source's Gram matrix."""
    scores = np.empty(len(pairs))
    pair_source = sources[pairs[:, 0]]
    for s in np.unique(pair_source):
        index = np.flatnonzero(sources == s)
        position = np.full(len(sources), -1)
        position[index] = np.arange(len(index))
        gram = first[index] @ second[index].T
        chosen = pair_source == s
        scores[chosen] = gram[position[pairs[chosen, 0]], position[pairs[chosen, 1]]]
    return scores


def _cohort_statistics(queries: np.ndarray, sources: np.ndarray, patients: np.ndarray, reference: np.ndarray,
                       reference_sources: np.ndarray, reference_patients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each query's similarity to the reference vectors of its
    source, other patients only."""
    mean, std = np.zeros(len(queries)), np.ones(len(queries))
    for s in np.unique(sources):
        q, r = np.flatnonzero(sources == s), np.flatnonzero(reference_sources == s)
        keep = patients[q][:, None] != reference_patients[r][None, :]
        if not len(r) or not keep.any():
            continue
        similarity = queries[q] @ reference[r].T
        count = np.maximum(keep.sum(axis=1), 1)
        mean[q] = (similarity * keep).sum(axis=1) / count
        std[q] = np.sqrt(((similarity - mean[q][:, None]) ** 2 * keep).sum(axis=1) / count) + 1e-6
    return mean, std


@dataclass
class _Reference:
    """The attacker's reference set: each channel's vectors of the train split, anonymized and real."""

    anonymized: list[np.ndarray]
    real: list[np.ndarray]
    sources: np.ndarray
    patients: np.ndarray


class _Scorer(torch.nn.Module):
    """A linear score shared by every source plus a linear correction of each source, which reads
    the features standardised within that source."""

    def __init__(self, features: int, sources: int) -> None:
        super().__init__()
        self.shared = torch.nn.Linear(features, 1)
        self.own = torch.nn.Parameter(torch.zeros(sources + 1, features))
        self.bias = torch.nn.Parameter(torch.zeros(sources + 1))

    def forward(self, x: torch.Tensor, x_own: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        return self.shared(x).squeeze(1) + (x_own * self.own[source]).sum(1) + self.bias[source]


class FusionAttacker:
    """A trained fusion attacker (:func:`train_fusion_attacker`); :meth:`scores` scores pairs."""

    def __init__(self, channels: list[Features], reference: _Reference, source_names: list[str]) -> None:
        self.channels = channels
        self.reference = reference
        self.source_names = source_names
        width = 3 * len(channels)
        self.shift, self.scale = np.zeros(width), np.ones(width)
        rows = len(source_names) + 1
        self.own_shift, self.own_scale = np.zeros((rows, width)), np.ones((rows, width))
        self.scorer = _Scorer(width, len(source_names))

    def features(self, anonymized: np.ndarray, real: np.ndarray, sources: np.ndarray, patients: np.ndarray,
                 pairs: np.ndarray) -> np.ndarray:
        """Per pair: each channel's similarity and its two standard scores against the reference set."""
        return self.vector_features([c(anonymized) for c in self.channels], [c(real) for c in self.channels],
                                    sources, patients, pairs)

    def vector_features(self, anonymized: list[np.ndarray], real: list[np.ndarray], sources: np.ndarray,
                        patients: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """:meth:`features` from each channel's vectors of the two stacks."""
        ref = self.reference
        columns = []
        for first, second, ref_anonymized, ref_real in zip(anonymized, real, ref.anonymized, ref.real, strict=True):
            similarity = _gram_pairs(first, second, sources, pairs)
            mean_a, std_a = _cohort_statistics(first, sources, patients, ref_real, ref.sources, ref.patients)
            mean_b, std_b = _cohort_statistics(second, sources, patients, ref_anonymized, ref.sources, ref.patients)
            columns += [similarity, (similarity - mean_a[pairs[:, 0]]) / std_a[pairs[:, 0]],
                        (similarity - mean_b[pairs[:, 1]]) / std_b[pairs[:, 1]]]
        return np.stack(columns, axis=1)

    def source_index(self, pair_sources: np.ndarray) -> np.ndarray:
        """Each pair's source as a row of the per-source corrections (the last: a source not trained on)."""
        names = {name: k for k, name in enumerate(self.source_names)}
        return np.array([names.get(s, len(self.source_names)) for s in pair_sources], dtype=np.int64)

    def standardise(self, features: np.ndarray, source: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The scorer's two inputs: features standardised over all sources, and within each source."""
        shared = (features - self.shift) / self.scale
        own = (features - self.own_shift[source]) / self.own_scale[source]
        return torch.from_numpy(shared.astype(np.float32)), torch.from_numpy(own.astype(np.float32))

    def fit_standardisation(self, features: np.ndarray, source: np.ndarray) -> None:
        self.shift, self.scale = features.mean(axis=0), features.std(axis=0) + 1e-6
        for k in np.unique(source):
            own = features[source == k]
            self.own_shift[k], self.own_scale[k] = own.mean(axis=0), own.std(axis=0) + 1e-6

    @torch.no_grad()
    def scores(self, anonymized: np.ndarray, real: np.ndarray, sources: np.ndarray, pairs: np.ndarray,
               patients: np.ndarray | None = None) -> np.ndarray:
        """Scores of within-source ``pairs`` ``(i, j)``: ``anonymized[i]`` against ``real[j]``
        (``patients`` only to leave a pair's own patient out of the reference set)."""
        if patients is None:
            patients = np.full(len(sources), "", dtype=object)
        source = self.source_index(sources[pairs[:, 0]])
        x, x_own = self.standardise(self.features(anonymized, real, sources, patients, pairs), source)
        return self.scorer(x, x_own, torch.from_numpy(source)).numpy().astype(np.float64)


def _pair_weights(genuine: np.ndarray, pair_source: np.ndarray) -> np.ndarray:
    """Each source's genuine pairs and its impostor pairs weigh alike, the square root of its
    genuine count in all (a large source leads without drowning the small ones)."""
    weights = np.zeros(len(genuine))
    for s in np.unique(pair_source):
        for kind in (genuine, ~genuine):
            chosen = (pair_source == s) & kind
            if chosen.any() and (genuine & (pair_source == s)).any():
                weights[chosen] = np.sqrt((genuine & (pair_source == s)).sum()) / chosen.sum()
    return weights / max(weights.sum(), 1e-12) * len(weights)


def source_mean_auc(genuine: np.ndarray, scores: np.ndarray, pair_source: np.ndarray) -> float:
    """Mean of the per-source AUCs, weighted by each source's genuine pairs."""
    total, weight = 0.0, 0
    for s in np.unique(pair_source):
        chosen = pair_source == s
        count = int(genuine[chosen].sum())
        if count and count < chosen.sum():
            total += count * roc_auc(genuine[chosen], scores[chosen])
            weight += count
    return total / weight if weight else float("nan")


def train_fusion_attacker(preset: Preset, anon_train: Split, real_train: Split, anon_val: Split, real_val: Split,
                          seed: int, steps: int = 600, check_every: int = 20, impostor_share: float = 0.5,
                          weight_decay: float = 1e-4) -> FusionAttacker:
    """A fresh fusion attacker for one anonymizer.

    Parameters
    ----------
    anon_train, real_train
        The train split anonymized and as it is (same order): the reference set, and the pairs
        (first image anonymized, second real) the scorer learns from.
    anon_val, real_val
        The validation split alike; the step with the best genuine-weighted mean of per-source
        AUCs is kept.
    seed
        Seeds the per-pixel weighted channel, the scorer and the share of impostor pairs drawn.
    steps, check_every
        Full-batch Adam steps, and how often the validation AUC is checked.
    impostor_share
        Fraction of the train split's impostor pairs drawn for this attacker.
    weight_decay
        L2 penalty on the scorer's weights.
    """
    started = time.monotonic()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    weighted_ncc = train_metric_attacker(preset, anon_train, real_train, anon_val, real_val, seed)
    side = real_train.images.shape[1]
    channels: list[Features] = [features for _, needs, features in CHANNELS if needs <= side]
    channels.append(_embedding_channel(weighted_ncc))
    reference = _Reference([c(anon_train.images) for c in channels], [c(real_train.images) for c in channels],
                           real_train.sources, real_train.patients)
    attacker = FusionAttacker(channels, reference, sorted(set(real_train.sources)))

    pairs, genuine = real_train.all_within_source_pairs()
    keep = genuine | (rng.random(len(pairs)) < impostor_share)
    pairs, genuine = pairs[keep], genuine[keep]
    pair_source = real_train.sources[pairs[:, 0]]
    source = attacker.source_index(pair_source)
    x = attacker.vector_features(reference.anonymized, reference.real, real_train.sources, real_train.patients, pairs)
    attacker.fit_standardisation(x, source)
    inputs = (*attacker.standardise(x, source), torch.from_numpy(source))
    val_pairs, val_genuine = real_val.all_within_source_pairs()
    val_source = attacker.source_index(real_val.sources[val_pairs[:, 0]])
    x_val = attacker.features(anon_val.images, real_val.images, real_val.sources, real_val.patients, val_pairs)
    val_inputs = (*attacker.standardise(x_val, val_source), torch.from_numpy(val_source))

    targets = torch.from_numpy(genuine.astype(np.float32))
    weights = torch.from_numpy(_pair_weights(genuine, pair_source).astype(np.float32))
    optimiser = torch.optim.Adam(attacker.scorer.parameters(), lr=1e-2, weight_decay=weight_decay)
    best, best_state = -1.0, copy.deepcopy(attacker.scorer.state_dict())
    for step in range(steps + 1):
        if step % check_every == 0:
            with torch.no_grad():
                auc = source_mean_auc(val_genuine, attacker.scorer(*val_inputs).numpy(), val_source)
            if auc > best:
                best, best_state = auc, copy.deepcopy(attacker.scorer.state_dict())
        if step == steps:
            break
        loss = F.binary_cross_entropy_with_logits(attacker.scorer(*inputs), targets, weight=weights)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    attacker.scorer.load_state_dict(best_state)
    log.info("fusion attacker", seed=seed, val_auc=round(best, 4), seconds=round(time.monotonic() - started))
    return attacker


def _embedding_channel(model: MetricEmbedding) -> Callable[[np.ndarray], np.ndarray]:
    return lambda images: embed(model, images)
