"""The generator trained against the linkage attack itself.

PriCheXy-Net trains its generator against one live siamese attacker; on two cores that attacker
stays weak, and a fixed similarity (normalised cross-correlation at 32 px) links more patients
than it does. Here the generator is trained against the similarities themselves, made
differentiable: for a batch of genuine pairs (a, b) of one source, each pair's score is compared
with the scores of the same first image against the other patients' second images, and the
loss is the part of that soft ranking AUC above one half, for the first image anonymized and the
second real, and for both anonymized (an attacker can run the public model on its own image).
Utility is held by the real-image classifier: its predictions on the anonymized image must stay
those on the real one (cross-entropy against its own probabilities, weight ``utility_weight``).

Training is checkpointed after every epoch of ``epoch_steps`` steps and resumes from there; every
epoch records the validation split's AUC of each fixed attacker and the classifier's AUC, the
curve the model card plots.
"""

from __future__ import annotations

import copy
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import structlog
import torch
import torch.nn.functional as F

from deid.train.attacks import BASELINES, BOTH_ANONYMIZED, ncc_torch, pair_scores
from deid.train.data import LABELS, Split
from deid.train.loops import anonymize, autocast, class_probabilities, tensor
from deid.train.metrics import roc_auc
from deid.train.networks import Classifier, Deformation
from deid.train.presets import Preset

log = structlog.get_logger("deid.train")

#: Sizes of the cross-correlations the generator is trained against.
NCC_SIZES = (16, 32, 64)


def soft_auc(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft AUC of genuine pairs ``(first[i], second[i])`` against impostors ``(first[i], second[j])``
    and ``(first[j], second[i])``, scored by dot products (rows of unit vectors)."""
    scores = first @ second.T
    genuine = scores.diagonal()
    off = ~torch.eye(len(scores), dtype=torch.bool)
    rows = torch.sigmoid((genuine[:, None] - scores) / temperature)[off]
    columns = torch.sigmoid((genuine[None, :] - scores) / temperature)[off]
    return (rows.mean() + columns.mean()) / 2


def privacy_loss(anon_first: torch.Tensor, real_second: torch.Tensor, anon_second: torch.Tensor,
                 temperature: float = 0.05) -> torch.Tensor:
    """Sum over :data:`NCC_SIZES` and both linkages of the soft AUC above 0.5."""
    total = anon_first.new_zeros(())
    for size in NCC_SIZES:
        a = ncc_torch(anon_first, size)
        for b in (ncc_torch(real_second, size), ncc_torch(anon_second, size)):
            total = total + F.relu(soft_auc(a, b, temperature) - 0.5)
    return total


def utility_loss(classifier: Classifier, anonymized: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the classifier on ``anonymized`` against its own probabilities on ``real``
    (minus their entropy: zero when the predictions are unchanged)."""
    with torch.no_grad():
        target = torch.sigmoid(classifier(real).float())
    logits = classifier(anonymized).float()
    target = target.float()
    entropy = F.binary_cross_entropy(target, target)
    return F.binary_cross_entropy_with_logits(logits, target) - entropy


class PairSampler:
    """Batches of genuine pairs of one source, one pair per patient, sources drawn by their
    number of patients with two images or more."""

    def __init__(self, split: Split, batch: int, rng: np.random.Generator) -> None:
        by_patient: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(split.patients):
            by_patient[p].append(i)
        self.by_source: dict[str, list[list[int]]] = defaultdict(list)
        for idx in by_patient.values():
            if len(idx) > 1:
                self.by_source[str(split.sources[idx[0]])].append(idx)
        self.by_source = {s: v for s, v in self.by_source.items() if len(v) > 1}
        self.names = sorted(self.by_source)
        weights = np.array([len(self.by_source[s]) for s in self.names], float)
        self.weights, self.batch, self.rng = weights / weights.sum(), batch, rng

    def __call__(self) -> np.ndarray:
        patients = self.by_source[self.names[self.rng.choice(len(self.names), p=self.weights)]]
        chosen = self.rng.choice(len(patients), min(self.batch, len(patients)), replace=False)
        return np.array([self.rng.choice(patients[k], 2, replace=False) for k in chosen])


def validation_figures(deformation: Deformation, classifier: Classifier, val: Split) -> dict:
    """The validation split's pooled AUC for each fixed attacker and the classifier's mean AUC."""
    anon = anonymize(deformation, val.images)
    pairs, genuine = val.all_within_source_pairs()
    out = {}
    for name, features in BASELINES.items():
        out[name] = roc_auc(genuine, pair_scores(features(anon), features(val.images), pairs))
    both_name, both = BOTH_ANONYMIZED
    out[both_name] = roc_auc(genuine, pair_scores(both(anon), both(anon), pairs))
    probabilities = class_probabilities(classifier, anon)
    out["utility"] = float(np.nanmean([
        roc_auc(val.targets[val.masks[:, k] > 0, k], probabilities[val.masks[:, k] > 0, k])
        for k in range(len(LABELS))
    ]))
    return {k: round(float(v), 4) for k, v in out.items()}


#: The validation utility AUC a generator may lose before the classifier term weighs more.
UTILITY_TOLERANCE = 0.005


def worst_attack(figures: dict) -> float:
    """The highest validation AUC of any fixed attacker in a row of the curve."""
    return max(v for k, v in figures.items() if k not in ("step", "utility", "utility_weight"))


def train_linkage(preset: Preset, deformation: Deformation, classifier: Classifier, train: Split, val: Split,
                  seed: int, epochs: int, epoch_steps: int, checkpoint: Path, utility_weight: float,
                  lr: float = 1e-2, budget_minutes: float | None = None) -> dict:
    """Train ``deformation`` for ``epochs`` epochs of ``epoch_steps`` steps, or until the epoch in
    which its training time passes ``budget_minutes``, resuming from ``checkpoint`` when it exists;
    save it there after every epoch (atomically).

    The classifier term starts at ``utility_weight`` and is held to the utility: after an epoch
    whose validation utility AUC lies more than :data:`UTILITY_TOLERANCE` below real images' it
    doubles, else it shrinks by a fifth (within 1-10 000). The generator kept is the epoch with the
    lowest :func:`worst_attack` among those within the tolerance (the start, the identity, if none).

    Returns
    -------
    dict
        ``state_dict`` (the kept generator), ``last`` (the last one), ``kept_step``, ``steps``,
        ``minutes`` (training time, over resumes) and ``curve`` (one row of :func:`validation_figures`
        per epoch, with its step and the classifier term's weight).
    """
    classifier.eval()
    for parameter in classifier.parameters():
        parameter.requires_grad_(False)
    optimiser = torch.optim.Adam(deformation.generator.parameters(), lr=lr)
    state: dict = {"steps": 0, "minutes": 0.0, "curve": [], "epoch": 0, "utility_weight": utility_weight,
                   "kept_step": 0, "kept": copy.deepcopy(deformation.generator.state_dict())}
    rng = np.random.default_rng(seed)
    if checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=False, map_location=deformation.kernel.device)
        deformation.generator.load_state_dict(saved["state_dict"])
        optimiser.load_state_dict(saved["optimiser"])
        state = {k: saved[k] for k in state}
        rng.bit_generator.state = saved["rng"]
        torch.set_rng_state(saved["torch_rng"].cpu())
        log.info("resumed", checkpoint=str(checkpoint), epoch=state["epoch"], steps=state["steps"])
    else:
        torch.manual_seed(seed)
        state["curve"].append({"step": 0, **validation_figures(deformation, classifier, val),
                               "utility_weight": utility_weight})
    real_utility = state["curve"][0]["utility"]
    sample = PairSampler(train, preset.batch // 2, rng)
    x_train = tensor(train.images)
    while state["epoch"] < epochs and (budget_minutes is None or state["minutes"] < budget_minutes):
        started = time.monotonic()
        deformation.train()
        for _ in range(epoch_steps):
            pairs = sample()
            x1, x2 = x_train[pairs[:, 0]], x_train[pairs[:, 1]]
            with autocast():
                anon = deformation(torch.cat([x1, x2])).float()
                anon1, anon2 = anon[: len(pairs)], anon[len(pairs):]
                utility = utility_loss(classifier, anon1, x1)
            privacy = privacy_loss(anon1, x2, anon2)
            loss = privacy + state["utility_weight"] * utility
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            state["steps"] += 1
        deformation.eval()
        state["epoch"] += 1
        state["minutes"] += (time.monotonic() - started) / 60
        figures = {"step": state["steps"], **validation_figures(deformation, classifier, val),
                   "utility_weight": round(state["utility_weight"], 2)}
        state["curve"].append(figures)
        within = figures["utility"] >= real_utility - UTILITY_TOLERANCE
        kept = next(row for row in state["curve"] if row["step"] == state["kept_step"])
        if within and worst_attack(figures) < worst_attack(kept):
            state["kept_step"], state["kept"] = state["steps"], copy.deepcopy(deformation.generator.state_dict())
        state["utility_weight"] = min(10_000.0, max(1.0, state["utility_weight"] * (0.8 if within else 2.0)))
        log.info("epoch", network="linkage generator", epoch=state["epoch"], **figures,
                 minutes=round(state["minutes"], 1), kept_step=state["kept_step"])
        partial = checkpoint.with_suffix(".partial")
        torch.save({**state, "state_dict": deformation.generator.state_dict(), "optimiser": optimiser.state_dict(),
                    "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, partial)
        os.replace(partial, checkpoint)
    return {**state, "state_dict": state["kept"], "last": deformation.generator.state_dict()}
