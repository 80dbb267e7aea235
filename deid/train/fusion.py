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
and column profile, the coarse registration of the ``registration`` attacker (its grid of affine
maps, without the per-pair refinement), and the per-pixel weighted cross-correlation
(:func:`train_metric_attacker`).

Where the fusion links a source's held-out train pairs worse than one fixed channel's similarity
alone (:func:`_choose_fallbacks`: two halves of the patients, each scored by a scorer trained on
the other), that source is scored by that channel: a source with few training pairs cannot carry
its own correction, and the validation split may hold none of its pairs.

The attackers trained on one anonymizer share its fixed channels (:class:`FixedChannels`: their
reference stacks and the columns of every pair, computed once); each adds its weighted channel.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import structlog
import torch
import torch.nn.functional as F

from deid.train.attacks import (
    REGISTRATION_GRID,
    Features,
    _unit_rows,
    area_downsize,
    embed,
    highpass_features,
    hog_features,
    ncc_features,
    registration_search,
    registration_thumbnails,
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


@dataclass(frozen=True)
class VectorChannel:
    """A similarity that is the dot product of one unit vector per image, the same on both sides."""

    name: str
    needs: int
    features: Features

    def anonymized(self, images: np.ndarray) -> np.ndarray:
        return self.features(images)

    def real(self, images: np.ndarray) -> np.ndarray:
        return self.features(images)

    def similarity(self, anonymized: np.ndarray, real: np.ndarray) -> np.ndarray:
        """(len(anonymized), len(real)) similarities of the prepared vectors."""
        return anonymized @ real.T


@dataclass(frozen=True)
class RegistrationChannel:
    """The coarse registration of ``registration`` (:func:`~deid.train.attacks.registration_search`):
    the best ``ncc32`` over a grid of affine maps of the anonymized image."""

    grid: tuple = REGISTRATION_GRID
    name: str = "registration"
    needs: int = 64

    def anonymized(self, images: np.ndarray) -> np.ndarray:
        return registration_thumbnails(images, 32, self.grid)

    def real(self, images: np.ndarray) -> np.ndarray:
        return ncc_features(images, 32).astype(np.float32)

    def similarity(self, anonymized: np.ndarray, real: np.ndarray) -> np.ndarray:
        return registration_search(anonymized, real)[0].astype(np.float64)


Channel = VectorChannel | RegistrationChannel

#: Every fixed channel but registration, whose grid follows the anonymizer.
CHANNELS: tuple[VectorChannel, ...] = (
    *(VectorChannel(f"ncc{s}", s, partial(ncc_features, size=s)) for s in (8, 16, 32, 64)),
    VectorChannel("hog32-4", 32, lambda x: hog_features(x, 32, 4)),
    VectorChannel("hog64-8", 64, lambda x: hog_features(x, 64, 8)),
    VectorChannel("hog128-8", 128, lambda x: hog_features(x, 128, 8)),
    VectorChannel("hog128-16", 128, lambda x: hog_features(x, 128, 16)),
    VectorChannel("highpass32", 32, highpass_features),
    VectorChannel("gradient32", 32, lambda x: _gradient(x, 32)),
    VectorChannel("histogram", 1, lambda x: _histogram(x, 32)),
    VectorChannel("profile", 64, lambda x: _profile(x, 64)),
)


def _cohort_statistics(similarity: np.ndarray, patients: np.ndarray,
                       reference_patients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each row of ``similarity`` (queries against the reference
    images of their source), other patients only; 0 and 1 where a row has none."""
    keep = patients[:, None] != reference_patients[None, :]
    if not keep.any():
        return np.zeros(len(patients)), np.ones(len(patients))
    count = np.maximum(keep.sum(axis=1), 1)
    mean = (similarity * keep).sum(axis=1) / count
    std = np.sqrt(((similarity - mean[:, None]) ** 2 * keep).sum(axis=1) / count) + 1e-6
    return np.where(keep.any(axis=1), mean, 0.0), np.where(keep.any(axis=1), std, 1.0)


@dataclass
class _Reference:
    """The attacker's reference set: each channel's vectors of the train split, anonymized and real."""

    anonymized: list[np.ndarray]
    real: list[np.ndarray]
    sources: np.ndarray
    patients: np.ndarray

    def after(self, count: int) -> _Reference:
        """The reference set of the channels after the first ``count``."""
        return _Reference(self.anonymized[count:], self.real[count:], self.sources, self.patients)


def channel_columns(channels: list[Channel], anonymized: list[np.ndarray], real: list[np.ndarray],
                    reference: _Reference, sources: np.ndarray, patients: np.ndarray,
                    pairs: np.ndarray) -> np.ndarray:
    """Per pair and channel: the similarity and its two standard scores against the reference set.

    Parameters
    ----------
    channels
        The channels, in the order of the columns.
    anonymized, real
        Each channel's prepared stacks of the images the pairs index (the reference set's own
        stacks when the pairs are the reference set's: each similarity matrix then is its own
        matrix against the reference set).
    reference
        The channels' stacks of the reference set.
    sources, patients
        Of the images the pairs index; a pair's own patients are left out of the reference set.
    pairs
        Within-source pairs ``(i, j)``: ``anonymized[i]`` against ``real[j]``.

    Returns
    -------
    numpy.ndarray
        ``(len(pairs), 3 * len(channels))``: each channel's similarity, its standard score among
        ``i``'s similarities to the real reference images of its source, and ``j``'s among the
        anonymized ones.
    """
    pair_source = sources[pairs[:, 0]]
    columns = np.zeros((len(pairs), 3 * len(channels)))
    for c, (channel, first, second, ref_anonymized, ref_real) in enumerate(
            zip(channels, anonymized, real, reference.anonymized, reference.real, strict=True)):
        own_reference = first is ref_anonymized and second is ref_real
        for s in np.unique(pair_source):
            index, r = np.flatnonzero(sources == s), np.flatnonzero(reference.sources == s)
            position = np.full(len(sources), -1)
            position[index] = np.arange(len(index))
            matrix = channel.similarity(first[index], second[index])
            to_reference = matrix if own_reference else channel.similarity(first[index], ref_real[r])
            from_reference = matrix.T if own_reference else channel.similarity(ref_anonymized[r], second[index]).T
            mean_a, std_a = _cohort_statistics(to_reference, patients[index], reference.patients[r])
            mean_b, std_b = _cohort_statistics(from_reference, patients[index], reference.patients[r])
            chosen = pair_source == s
            i, j = position[pairs[chosen, 0]], position[pairs[chosen, 1]]
            similarity = matrix[i, j]
            columns[chosen, 3 * c] = similarity
            columns[chosen, 3 * c + 1] = (similarity - mean_a[i]) / std_a[i]
            columns[chosen, 3 * c + 2] = (similarity - mean_b[j]) / std_b[j]
    return columns


def _no_patients(sources: np.ndarray) -> np.ndarray:
    return np.full(len(sources), "", dtype=object)


class FixedChannels:
    """The fixed channels of the fusion attackers trained on one anonymizer's output, prepared
    once for all of them: their stacks of the reference set (the train split), and their columns
    (:func:`channel_columns`) of every within-source pair of the train and validation splits. An
    attacker adds only its own per-pixel weighted channel.

    Parameters
    ----------
    anon_train, real_train, anon_val, real_val
        As :func:`train_fusion_attacker` takes them.
    search
        The registration channel's grid.
    """

    def __init__(self, anon_train: Split, real_train: Split, anon_val: Split, real_val: Split,
                 search: tuple = REGISTRATION_GRID) -> None:
        side = real_train.images.shape[1]
        candidates: list[Channel] = [*CHANNELS, RegistrationChannel(search)]
        self.channels = [c for c in candidates if c.needs <= side]
        self.reference = _Reference([c.anonymized(anon_train.images) for c in self.channels],
                                    [c.real(real_train.images) for c in self.channels],
                                    real_train.sources, real_train.patients)
        self.train_pairs, self.train_genuine = real_train.all_within_source_pairs()
        self.train = channel_columns(self.channels, self.reference.anonymized, self.reference.real, self.reference,
                                     real_train.sources, real_train.patients, self.train_pairs)
        self.val_pairs, self.val_genuine = real_val.all_within_source_pairs()
        self.val = self.columns(anon_val.images, real_val.images, real_val.sources, self.val_pairs, real_val.patients)

    def columns(self, anonymized: np.ndarray, real: np.ndarray, sources: np.ndarray, pairs: np.ndarray,
                patients: np.ndarray | None = None) -> np.ndarray:
        """The fixed channels' columns of ``pairs``, as :meth:`FusionAttacker.scores` takes them."""
        return channel_columns(self.channels, [c.anonymized(anonymized) for c in self.channels],
                               [c.real(real) for c in self.channels], self.reference, sources,
                               _no_patients(sources) if patients is None else patients, pairs)


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

    def __init__(self, channels: list[Channel], reference: _Reference, source_names: list[str]) -> None:
        self.channels = channels
        self.reference = reference
        self.source_names = source_names
        width = 3 * len(channels)
        self.shift, self.scale = np.zeros(width), np.ones(width)
        rows = len(source_names) + 1
        self.own_shift, self.own_scale = np.zeros((rows, width)), np.ones((rows, width))
        self.scorer = _Scorer(width, len(source_names))
        #: Sources (rows of the corrections) scored by one channel's similarity alone, by the
        #: column of that similarity: where it linked the train split's held-out pairs better.
        self.fallback: dict[int, int] = {}

    def features(self, anonymized: np.ndarray, real: np.ndarray, sources: np.ndarray, patients: np.ndarray,
                 pairs: np.ndarray, leading: np.ndarray | None = None) -> np.ndarray:
        """Per pair: each channel's similarity and its two standard scores against the reference
        set (:func:`channel_columns`). ``leading``: the columns of the first channels for these
        pairs, computed before (:meth:`FixedChannels.columns`); only the others are computed."""
        done = 0 if leading is None else leading.shape[1] // 3
        rest = self.channels[done:]
        columns = channel_columns(rest, [c.anonymized(anonymized) for c in rest], [c.real(real) for c in rest],
                                  self.reference.after(done), sources, patients, pairs)
        return columns if leading is None else np.concatenate([leading, columns], axis=1)

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
               patients: np.ndarray | None = None, leading: np.ndarray | None = None) -> np.ndarray:
        """Scores of within-source ``pairs`` ``(i, j)``: ``anonymized[i]`` against ``real[j]``
        (``patients`` only to leave a pair's own patient out of the reference set; ``leading``
        as :meth:`features` takes it)."""
        if patients is None:
            patients = _no_patients(sources)
        source = self.source_index(sources[pairs[:, 0]])
        features = self.features(anonymized, real, sources, patients, pairs, leading)
        x, x_own = self.standardise(features, source)
        scores = self.scorer(x, x_own, torch.from_numpy(source)).numpy().astype(np.float64)
        for row, column in self.fallback.items():
            chosen = source == row
            scores[chosen] = x_own[chosen, column].numpy()
        return scores

    def channel_choices(self) -> dict[str, str]:
        """Each trained source's scorer: ``fusion`` or the one channel it falls back to."""
        names = [c.name for c in self.channels]
        return {source: names[self.fallback[k] // 3] if k in self.fallback else "fusion"
                for k, source in enumerate(self.source_names)}


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


def _fit_scorer(scorer: _Scorer, inputs: tuple, genuine: np.ndarray, pair_source: np.ndarray, steps: int,
                weight_decay: float, check: Callable[[], float] | None = None, check_every: int = 20) -> int:
    """Full-batch Adam on the weighted logistic loss; with ``check``, the scorer of the step with
    the best ``check()`` is kept. Returns that step (``steps`` without ``check``)."""
    targets = torch.from_numpy(genuine.astype(np.float32))
    weights = torch.from_numpy(_pair_weights(genuine, pair_source).astype(np.float32))
    optimiser = torch.optim.Adam(scorer.parameters(), lr=1e-2, weight_decay=weight_decay)
    best, best_step, best_state = -1.0, steps, copy.deepcopy(scorer.state_dict())
    for step in range(steps + 1):
        if check is not None and step % check_every == 0:
            auc = check()
            if auc > best:
                best, best_step, best_state = auc, step, copy.deepcopy(scorer.state_dict())
        if step == steps:
            break
        loss = F.binary_cross_entropy_with_logits(scorer(*inputs), targets, weight=weights)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    if check is not None:
        scorer.load_state_dict(best_state)
    return best_step


def _choose_fallbacks(attacker: FusionAttacker, x: np.ndarray, genuine: np.ndarray, pair_source: np.ndarray,
                      source: np.ndarray, pair_patients: np.ndarray, steps: int, weight_decay: float,
                      rng: np.random.Generator) -> dict[int, int]:
    """The sources where one fixed channel's similarity links the train split's held-out pairs
    better than the fusion: the patients are split in two halves, a scorer trained ``steps`` on the
    pairs within one half scores the pairs within the other, and each source's AUCs are averaged
    over the halves by their genuine pairs. A source with too few pairs for that keeps the fusion."""
    patients = np.unique(pair_patients)
    half = dict(zip(patients, rng.permutation(len(patients)) % 2, strict=True))
    halves = np.vectorize(half.__getitem__)(pair_patients)
    fixed_columns = [3 * c for c, channel in enumerate(attacker.channels) if channel.name != "weighted-ncc"]
    totals: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for k in (0, 1):
        fit = (halves[:, 0] == 1 - k) & (halves[:, 1] == 1 - k)
        held = (halves[:, 0] == k) & (halves[:, 1] == k)
        scorer = _Scorer(x.shape[1], len(attacker.source_names))
        _fit_scorer(scorer, (*attacker.standardise(x[fit], source[fit]), torch.from_numpy(source[fit])),
                    genuine[fit], pair_source[fit], steps, weight_decay)
        with torch.no_grad():
            fused = scorer(*attacker.standardise(x[held], source[held]), torch.from_numpy(source[held])).numpy()
        for row in np.unique(source[held]):
            chosen = source[held] == row
            count = int(genuine[held][chosen].sum())
            if not count or count == chosen.sum():
                continue
            aucs = [roc_auc(genuine[held][chosen], fused[chosen])]
            aucs += [roc_auc(genuine[held][chosen], x[held][chosen, column]) for column in fixed_columns]
            totals[row] = totals.get(row, 0) + count * np.array(aucs)
            counts[row] = counts.get(row, 0) + count
    fallback = {}
    for row, total in totals.items():
        best = int(np.argmax(total))
        if best:
            fallback[int(row)] = fixed_columns[best - 1]
    return fallback


def train_fusion_attacker(preset: Preset, anon_train: Split, real_train: Split, anon_val: Split, real_val: Split,
                          seed: int, steps: int = 600, check_every: int = 20, impostor_share: float = 0.5,
                          weight_decay: float = 1e-4, search: tuple = REGISTRATION_GRID,
                          fixed: FixedChannels | None = None) -> FusionAttacker:
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
        Seeds the per-pixel weighted channel, the scorer, the share of impostor pairs drawn and
        the halves of :func:`_choose_fallbacks`.
    steps, check_every
        Full-batch Adam steps, and how often the validation AUC is checked.
    impostor_share
        Fraction of the train split's impostor pairs drawn for this attacker.
    weight_decay
        L2 penalty on the scorer's weights.
    search
        The registration channel's grid (the ``registration`` attacker's).
    fixed
        The fixed channels prepared for these splits (several attackers of one anonymizer share
        them); prepared here when not given, with ``search``.
    """
    started = time.monotonic()
    if fixed is None:
        fixed = FixedChannels(anon_train, real_train, anon_val, real_val, search)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    weighted_ncc = train_metric_attacker(preset, anon_train, real_train, anon_val, real_val, seed)
    side = real_train.images.shape[1]
    weighted = VectorChannel("weighted-ncc", side, lambda images: embed(weighted_ncc, images))
    own = _Reference([weighted.anonymized(anon_train.images)], [weighted.real(real_train.images)],
                     real_train.sources, real_train.patients)
    reference = _Reference([*fixed.reference.anonymized, *own.anonymized], [*fixed.reference.real, *own.real],
                           real_train.sources, real_train.patients)
    attacker = FusionAttacker([*fixed.channels, weighted], reference, sorted(set(real_train.sources)))

    keep = fixed.train_genuine | (rng.random(len(fixed.train_pairs)) < impostor_share)
    pairs, genuine = fixed.train_pairs[keep], fixed.train_genuine[keep]
    pair_source = real_train.sources[pairs[:, 0]]
    source = attacker.source_index(pair_source)
    x = np.concatenate([fixed.train[keep], channel_columns([weighted], own.anonymized, own.real, own,
                                                           real_train.sources, real_train.patients, pairs)], axis=1)
    attacker.fit_standardisation(x, source)
    inputs = (*attacker.standardise(x, source), torch.from_numpy(source))
    val_pairs, val_genuine = fixed.val_pairs, fixed.val_genuine
    val_source = attacker.source_index(real_val.sources[val_pairs[:, 0]])
    x_val = attacker.features(anon_val.images, real_val.images, real_val.sources, real_val.patients, val_pairs,
                              fixed.val)
    val_inputs = (*attacker.standardise(x_val, val_source), torch.from_numpy(val_source))

    @torch.no_grad()
    def check() -> float:
        return source_mean_auc(val_genuine, attacker.scorer(*val_inputs).numpy(), val_source)

    kept_step = _fit_scorer(attacker.scorer, inputs, genuine, pair_source, steps, weight_decay, check, check_every)
    attacker.fallback = _choose_fallbacks(attacker, x, genuine, pair_source, source, real_train.patients[pairs],
                                          kept_step, weight_decay, rng)
    log.info("fusion attacker", seed=seed, val_auc=round(check(), 4), kept_step=kept_step,
             choices=attacker.channel_choices(), seconds=round(time.monotonic() - started))
    return attacker
