"""The learned (fusion) attacker learns a link that every fixed attacker misses."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")

pytestmark = pytest.mark.train

from deid.train.data import Split  # noqa: E402
from deid.train.fusion import train_fusion_attacker  # noqa: E402
from deid.train.metrics import roc_auc  # noqa: E402
from deid.train.presets import preset  # noqa: E402
from deid.train.protocol import reidentification  # noqa: E402

TOY = dataclasses.replace(preset("cpu"), size=64, batch=8, attacker_size=16, attacker_epochs=1)


def typical_split(patients: int, per_patient: int, seed: int, sources: int = 2) -> Split:
    """64-px images that mix their source's common pattern, by a weight drawn per image between 0
    and 0.95, with their patient's pattern and their own noise: an image near its source's common
    look correlates with every image of the source, so a raw similarity ranks its impostors above
    the genuine pairs of less typical images; only a similarity read against the reference set
    (how typical each image is) separates them."""
    commons = np.random.default_rng(0).random((sources, 8, 8))
    rng = np.random.default_rng(seed)
    images, ids, names = [], [], []
    for p in range(patients):
        base = rng.random((8, 8))
        for _ in range(per_patient):
            weight = rng.uniform(0.0, 0.95)
            pattern = weight * commons[p % sources] + (1 - weight) * (0.5 * base + 0.5 * rng.random((8, 8)))
            image = np.kron(pattern, np.ones((8, 8))) + 0.02 * rng.standard_normal((64, 64))
            images.append(np.clip(image, 0, 1))
            ids.append(f"p{seed}-{p}")
            names.append(f"s{p % sources}")
    n = len(images)
    return Split(np.array(images, np.float32), np.array(ids), np.array(names), np.zeros((n, 3), np.float32),
                 np.ones((n, 3), np.float32))


def test_the_learned_attacker_links_what_every_fixed_attacker_misses():
    train, val, test = typical_split(40, 3, 1), typical_split(12, 3, 2), typical_split(20, 3, 3)
    reid = reidentification(TOY, lambda images: images, train, val, test, runs=1)
    fixed = {name: a for name, a in reid["attackers"].items() if name != "learned"}
    for source, learned in reid["attackers"]["learned"]["by_source"].items():
        best_fixed = max(a["by_source"][source][0] for a in fixed.values())
        assert best_fixed < 0.8 and learned[0] >= best_fixed + 0.1, (source, learned, best_fixed)


def test_the_learned_attacker_adapts_to_its_anonymizer():
    """Trained on an anonymizer that inverts the grey levels, the attacker links the inverted
    images to the real ones; trained on real images, it does not."""
    train, val, test = typical_split(40, 3, 1), typical_split(12, 3, 2), typical_split(20, 3, 3)
    invert = [dataclasses.replace(s, images=1 - s.images) for s in (train, val, test)]
    pairs, genuine = test.all_within_source_pairs()

    def auc(attacker) -> float:
        return roc_auc(genuine, attacker.scores(invert[2].images, test.images, test.sources, pairs))

    assert auc(train_fusion_attacker(TOY, invert[0], train, invert[1], val, seed=0)) > 0.8
    assert auc(train_fusion_attacker(TOY, train, train, val, val, seed=0)) < 0.6


def test_the_registration_channel_is_the_registration_attackers_search():
    from deid.train.attacks import registration_scores
    from deid.train.fusion import RegistrationChannel

    split = typical_split(10, 2, 4, sources=1)
    pairs, _ = split.all_within_source_pairs()
    channel = RegistrationChannel()
    matrix = channel.similarity(channel.anonymized(split.images[::-1]), channel.real(split.images))
    expected = registration_scores(split.images[::-1], split.images, pairs, refine_steps=0)
    np.testing.assert_allclose(matrix[pairs[:, 0], pairs[:, 1]], expected, atol=1e-6)


def _attacker_over_two_channels():
    from deid.train.fusion import FusionAttacker, VectorChannel, _Reference

    channels = [VectorChannel(name, 1, lambda images: images) for name in ("a", "b")]
    empty = np.zeros(0)
    return FusionAttacker(channels, _Reference([], [], empty, empty), ["s0"])


def _pairs_of(patients: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    first = np.repeat(np.arange(patients), 4)
    second = np.concatenate([[p, *rng.choice(np.delete(np.arange(patients), p), 3, replace=False)]
                             for p in range(patients)])
    pairs = np.stack([first, second], axis=1)
    return np.array([f"p{p}" for p in pairs.ravel()]).reshape(-1, 2), pairs[:, 0] == pairs[:, 1]


@pytest.mark.parametrize("steps, shift, expected", [
    (0, {0: 8.0}, {0: 0}),              # an untrained fusion loses to the one channel that links alone
    (300, {0: 1.0, 3: 1.0}, {}),        # two partial channels: their fusion links better than either
])
def test_a_source_falls_back_to_a_channel_only_where_it_links_held_out_pairs_better(steps, shift, expected):
    from deid.train.fusion import _choose_fallbacks

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    pair_patients, genuine = _pairs_of(300, rng)
    x = rng.standard_normal((len(genuine), 6))
    for column, by in shift.items():
        x[:, column] += by * genuine
    attacker = _attacker_over_two_channels()
    source = np.zeros(len(genuine), np.int64)
    attacker.fit_standardisation(x, source)
    fallback = _choose_fallbacks(attacker, x, genuine, np.full(len(genuine), "s0"), source, pair_patients,
                                 steps, 1e-4, rng)
    assert fallback == expected
    assert attacker.channel_choices() == {"s0": "fusion"}
    attacker.fallback = fallback
    assert attacker.channel_choices() == {"s0": "a" if expected else "fusion"}


def test_the_fixed_channels_computed_once_are_those_each_attacker_would_compute():
    """Several attackers of one anonymizer share :class:`FixedChannels`: its columns of every
    train pair are the columns of any subset of them, and an attacker's features of new pairs
    are the same with the fixed channels' columns given as without."""
    from deid.train.fusion import FixedChannels, channel_columns

    train, val, test = typical_split(16, 3, 1), typical_split(6, 3, 2), typical_split(8, 3, 3)
    anon = [dataclasses.replace(s, images=np.flip(s.images, axis=2).copy()) for s in (train, val, test)]
    fixed = FixedChannels(anon[0], train, anon[1], val)
    subset = fixed.train_pairs[::3]
    stacks = [c.anonymized(anon[0].images) for c in fixed.channels], [c.real(train.images) for c in fixed.channels]
    np.testing.assert_array_equal(
        channel_columns(fixed.channels, *stacks, fixed.reference, train.sources, train.patients, subset),
        fixed.train[::3])
    attacker = train_fusion_attacker(TOY, anon[0], train, anon[1], val, seed=0, fixed=fixed)
    pairs, _ = test.all_within_source_pairs()
    patients = np.full(len(test.sources), "", dtype=object)
    alone = attacker.features(anon[2].images, test.images, test.sources, patients, pairs)
    assert alone.shape[1] == 3 * (len(fixed.channels) + 1)
    np.testing.assert_array_equal(
        attacker.features(anon[2].images, test.images, test.sources, patients, pairs,
                          fixed.columns(anon[2].images, test.images, test.sources, pairs)), alone)
