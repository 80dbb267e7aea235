"""Training loops: the attacker, the classifier, and the generator's two phases.

Every loop is seeded, keeps the weights with the lowest validation loss, and works on whole
splits held in memory (:class:`deid.train.data.Split`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np
import structlog
import torch
import torch.nn.functional as F

from deid.train.data import LABELS, Split
from deid.train.keyed import KeyedTransform, Magnitudes
from deid.train.networks import Classifier, Deformation, DenseNet, ResNet, SiameseVerifier, UNet
from deid.train.presets import Preset

log = structlog.get_logger("deid.train")


_DEVICE = torch.device("cpu")


def use_device(name: str) -> None:
    """Run every network and hold every split on ``name`` (``cpu``, ``cuda``, ``cuda:1``)."""
    global _DEVICE
    _DEVICE = torch.device(name)


def device() -> torch.device:
    return _DEVICE


def autocast() -> torch.autocast:
    """Mixed precision (bfloat16) on a GPU; a no-op on the CPU."""
    return torch.autocast(device_type=_DEVICE.type, dtype=torch.bfloat16, enabled=_DEVICE.type == "cuda")


def on_device(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(_DEVICE)


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.float().cpu().numpy()


def seed_everything(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def new_verifier(preset: Preset) -> SiameseVerifier:
    blocks, width, bottleneck = preset.verifier
    return SiameseVerifier(ResNet(blocks, width, bottleneck)).to(_DEVICE)


def new_classifier(preset: Preset) -> Classifier:
    blocks, growth, width = preset.classifier
    return Classifier(DenseNet(blocks, growth, width), len(LABELS)).to(_DEVICE)


def new_deformation(preset: Preset, mu: float, seed: int = 0, intensity: float = 0.0,
                    identity: bool = False) -> Deformation:
    """A deformation with a freshly initialised generator (initialisation seeded by ``seed``); a third
    output channel when ``intensity`` > 0; with ``identity`` the output layer starts at zero, so that
    the deformation starts as the identity."""
    torch.manual_seed(seed)
    features, levels = preset.generator
    generator = UNet(features, levels, outputs=3 if intensity > 0 else 2)
    if identity:
        torch.nn.init.zeros_(generator.head.weight)
        if generator.head.bias is not None:
            torch.nn.init.zeros_(generator.head.bias)
    return Deformation(generator, mu, preset.generator_size, intensity=intensity).to(_DEVICE)


def tensor(images: np.ndarray) -> torch.Tensor:
    """``images`` (n, h, w) as a (n, 1, h, w) tensor on the device."""
    return on_device(images).unsqueeze(1)


def balanced_pairs(split: Split, rng: np.random.Generator, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Genuine pairs and as many within-source impostors, shuffled; ``count`` caps the total."""
    genuine = split.genuine_pairs()
    if count is not None and len(genuine) > count // 2:
        genuine = genuine[rng.choice(len(genuine), count // 2, replace=False)]
    impostors = split.impostor_pairs(len(genuine), rng)
    pairs = np.concatenate([genuine, impostors])
    labels = np.concatenate([np.ones(len(genuine)), np.zeros(len(impostors))]).astype(np.float32)
    order = rng.permutation(len(pairs))
    return pairs[order], labels[order]


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


Network = TypeVar("Network", bound=torch.nn.Module)


def _early_stopping(
    model: Network, epochs: int, patience: int, epoch: Callable[[int], float], what: str,
    keep_best: bool = True,
) -> tuple[Network, float, int]:
    """Run ``epoch(i)`` (returns the validation loss) until ``patience`` epochs bring no better
    loss; load the best weights back (or, without ``keep_best``, keep the last). Returns the
    model, the best loss and the epoch kept."""
    best, best_state, waited, best_epoch, i = float("inf"), copy.deepcopy(model.state_dict()), 0, -1, -1
    for i in range(epochs):
        loss = epoch(i)
        log.info("epoch", network=what, epoch=i, val_loss=round(loss, 5))
        if loss < best:
            best, best_state, waited, best_epoch = loss, copy.deepcopy(model.state_dict()), 0, i
        else:
            waited += 1
            if waited >= patience:
                break
    if keep_best:
        model.load_state_dict(best_state)
    return model.eval(), best, best_epoch if keep_best else i


def train_verifier(preset: Preset, train: Split, val: Split, seed: int) -> SiameseVerifier:
    """A fresh attacker trained on balanced within-source pairs of ``train`` (Adam, BCE, early
    stopping on ``val``)."""
    rng = seed_everything(seed)
    model = new_verifier(preset)
    optimiser = torch.optim.Adam(model.parameters(), lr=preset.critic_lr)
    val_pairs, val_labels = balanced_pairs(val, np.random.default_rng(seed + 1))
    x_train, x_val = tensor(train.images), tensor(val.images)

    def epoch(_: int) -> float:
        pairs, labels = balanced_pairs(train, rng, preset.critic_pairs)
        model.train()
        for b in _batches(len(pairs), preset.batch):
            logits = model(x_train[pairs[b, 0]], x_train[pairs[b, 1]])
            loss = F.binary_cross_entropy_with_logits(logits, on_device(labels[b]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return verifier_loss(model, x_val, x_val, val_pairs, val_labels)

    return _early_stopping(model, preset.critic_epochs, preset.patience, epoch, "verifier")[0]


@torch.no_grad()
def embeddings(model: SiameseVerifier, x: torch.Tensor, batch: int = 128) -> torch.Tensor:
    model.eval()
    return torch.cat([model.embedding(x[b]) for b in _batches(len(x), batch)])


@torch.no_grad()
def pair_scores(model: SiameseVerifier, x1: torch.Tensor, x2: torch.Tensor, pairs: np.ndarray) -> np.ndarray:
    """Same-patient probabilities of ``(x1[i], x2[j])`` for each pair ``(i, j)``."""
    e1, e2 = embeddings(model, x1), embeddings(model, x2)
    out = [torch.sigmoid(model.score(e1[pairs[b, 0]], e2[pairs[b, 1]])) for b in _batches(len(pairs), 8192)]
    return to_numpy(torch.cat(out))


def verifier_loss(model: SiameseVerifier, x1: torch.Tensor, x2: torch.Tensor, pairs: np.ndarray,
                  labels: np.ndarray) -> float:
    p = np.clip(pair_scores(model, x1, x2, pairs), 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def _masked_bce(logits: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (loss * masks).sum() / masks.sum().clamp(min=1)


def train_classifier(preset: Preset, train: Split, val: Split, seed: int,
                     augment: Magnitudes | None = None, epochs: int | None = None) -> Classifier:
    """The utility classifier on real images (Adam, masked BCE, horizontal flips, early stopping).

    With ``augment``, every training image also goes through :class:`KeyedTransform` with fresh
    random noise (standard augmentation: random rotation, scale, shift, elastic and intensity
    changes up to those magnitudes, drawn from the training seed, not from any run's key);
    ``epochs`` overrides the preset's most epochs.
    """
    rng = seed_everything(seed)
    model = new_classifier(preset)
    augmentation = None if augment is None else KeyedTransform(augment)
    optimiser = torch.optim.Adam(model.parameters(), lr=preset.critic_lr)
    x_train, t_train, m_train = tensor(train.images), on_device(train.targets), on_device(train.masks)

    def epoch(_: int) -> float:
        order = on_device(rng.permutation(len(train)))
        model.train()
        for b in _batches(len(order), preset.batch):
            idx = order[b]
            x = x_train[idx]
            flip = on_device(rng.random(len(idx)) < 0.5)
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            if augmentation is not None:
                size = augmentation.magnitudes.noise_size
                noise = on_device(rng.uniform(-1, 1, (len(idx), size)).astype(np.float32))
                x = augmentation(x, noise)
            with autocast():
                loss = _masked_bce(model(x).float(), t_train[idx], m_train[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return classifier_loss(model, val)

    return _early_stopping(model, epochs or preset.critic_epochs, preset.patience, epoch, "classifier")[0]


@torch.no_grad()
def class_probabilities(model: Classifier, images: np.ndarray) -> np.ndarray:
    model.eval()
    x = tensor(images)
    with autocast():
        return to_numpy(torch.cat([torch.sigmoid(model(x[b])) for b in _batches(len(x), 128)]))


def classifier_loss(model: Classifier, split: Split) -> float:
    p = on_device(np.clip(class_probabilities(model, split.images), 1e-7, 1 - 1e-7))
    logits = torch.log(p) - torch.log1p(-p)
    return float(_masked_bce(logits, on_device(split.targets), on_device(split.masks)))


def pretrain_generator(preset: Preset, deformation: Deformation, train: Split, val: Split, seed: int) -> Deformation:
    """Phase 1: the generator learns the identity through the warp (MSE to the input)."""
    rng = seed_everything(seed)
    optimiser = torch.optim.Adam(deformation.generator.parameters(), lr=preset.lr)
    x_train, x_val = tensor(train.images), tensor(val.images)

    def epoch(_: int) -> float:
        deformation.train()
        for b in _batches(len(x_train), preset.batch):
            x = x_train[on_device(rng.permutation(len(x_train))[: b.stop - b.start])]
            loss = F.mse_loss(deformation(x), x)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        deformation.eval()
        with torch.no_grad():
            return float(np.mean([F.mse_loss(deformation(x_val[b]), x_val[b]).item()
                                  for b in _batches(len(x_val), 128)]))

    return _early_stopping(deformation, preset.pretrain_epochs, preset.pretrain_epochs, epoch, "pretrain")[0]


def train_adversarial(
    preset: Preset, deformation: Deformation, verifier: SiameseVerifier, classifier: Classifier,
    train: Split, val: Split, seed: int, keep_best: bool = True,
) -> tuple[Deformation, int, int]:
    """Phase 2: the generator against the live attacker and classifier.

    Generator loss = masked BCE of the classifier on the deformed first image + mean of
    -log(1 - verifier(deformed x1, real x2)) over all pairs. After each generator step the
    verifier (Adam, BCE on the pair labels) and the classifier (Adam, masked BCE) take one step
    on the deformed images. The generator with the lowest validation loss is kept (as published),
    or the last one without ``keep_best``: the live critics keep improving, so the published rule
    favours early epochs. Returns the generator, the generator steps taken and the step after
    which the kept generator was taken.
    """
    rng = seed_everything(seed)
    g_opt = torch.optim.Adam(deformation.generator.parameters(), lr=preset.lr)
    v_opt = torch.optim.Adam(verifier.parameters(), lr=preset.critic_lr)
    c_opt = torch.optim.Adam(classifier.parameters(), lr=preset.critic_lr)
    x_train, x_val = tensor(train.images), tensor(val.images)
    t_train, m_train = on_device(train.targets), on_device(train.masks)
    t_val, m_val = on_device(val.targets), on_device(val.masks)
    val_pairs, _ = balanced_pairs(val, np.random.default_rng(seed + 1))

    def losses(x1: torch.Tensor, x2: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor):
        deformed = deformation(x1)
        utility = _masked_bce(classifier(deformed), targets, masks)
        privacy = F.softplus(verifier(deformed, x2)).mean()  # -log(1 - sigmoid(logit))
        return deformed, utility, privacy

    steps_after: list[int] = []

    def epoch(_: int) -> float:
        pairs, labels = balanced_pairs(train, rng, preset.adversarial_pairs)
        batches = list(_batches(len(pairs), preset.batch))
        steps_after.append((steps_after[-1] if steps_after else 0) + len(batches))
        for b in batches:
            i, j = on_device(pairs[b, 0]), on_device(pairs[b, 1])
            x1, x2 = x_train[i], x_train[j]
            deformation.train(), verifier.eval(), classifier.eval()
            deformed, utility, privacy = losses(x1, x2, t_train[i], m_train[i])
            g_opt.zero_grad()
            (utility + privacy).backward()
            g_opt.step()
            deformed = deformed.detach()
            verifier.train()
            v_loss = F.binary_cross_entropy_with_logits(verifier(deformed, x2), on_device(labels[b]))
            v_opt.zero_grad()
            v_loss.backward()
            v_opt.step()
            classifier.train()
            c_loss = _masked_bce(classifier(deformed), t_train[i], m_train[i])
            c_opt.zero_grad()
            c_loss.backward()
            c_opt.step()
        deformation.eval(), verifier.eval(), classifier.eval()
        with torch.no_grad():
            total = []
            for b in _batches(len(val_pairs), 128):
                i, j = on_device(val_pairs[b, 0]), on_device(val_pairs[b, 1])
                _, utility, privacy = losses(x_val[i], x_val[j], t_val[i], m_val[i])
                total.append((utility + privacy).item() * (b.stop - b.start))
        return sum(total) / len(val_pairs)

    deformation, _, kept = _early_stopping(
        deformation, preset.adversarial_epochs, preset.adversarial_epochs, epoch, "adversarial", keep_best
    )
    return deformation, steps_after[-1] if steps_after else 0, steps_after[kept] if kept >= 0 else 0


@torch.no_grad()
def anonymize(deformation: Deformation, images: np.ndarray) -> np.ndarray:
    """Apply a trained deformation to a stack of images."""
    deformation.eval()
    x = tensor(images)
    with autocast():
        return to_numpy(torch.cat([deformation(x[b]) for b in _batches(len(x), 64)]).squeeze(1))
