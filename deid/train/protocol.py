"""The evaluation protocol of PriCheXy-Net, on the patient-wise splits of ``cxr``.

Privacy: a fresh attacker is trained on anonymized pairs of the train split (both images
anonymized) and tested on pairs of held-out test patients with the first image anonymized and the
second real (a linkage attack). Only within-source pairs are scored; the AUC is given pooled and
per source, as mean and standard deviation over ``runs`` attackers.

Utility: the classifier trained on real images scores the anonymized test images; the figure is
the mean over labels of the per-label AUC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import structlog

from deid.train.data import LABELS, Split
from deid.train.loops import class_probabilities, pair_scores, tensor, train_verifier
from deid.train.networks import Classifier
from deid.train.presets import Preset

log = structlog.get_logger("deid.train")

Anonymizer = Callable[[np.ndarray], np.ndarray]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN without both classes."""
    labels = np.asarray(labels, bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def reidentification(preset: Preset, anonymize: Anonymizer, train: Split, val: Split, test: Split,
                     runs: int, seed: int = 100) -> dict:
    """Re-identification AUC of ``runs`` fresh attackers against ``anonymize``."""
    anon_train = replace(train, images=anonymize(train.images))
    anon_val = replace(val, images=anonymize(val.images))
    x_anon, x_real = tensor(anonymize(test.images)), tensor(test.images)
    pairs, genuine = test.all_within_source_pairs()
    pair_source = test.sources[pairs[:, 0]]
    pooled: list[float] = []
    by_source: dict[str, list[float]] = {s: [] for s in np.unique(test.sources)}
    for run in range(runs):
        attacker = train_verifier(preset, anon_train, anon_val, seed + run)
        scores = pair_scores(attacker, x_anon, x_real, pairs)
        pooled.append(roc_auc(genuine, scores))
        for source, values in by_source.items():
            here = pair_source == source
            values.append(roc_auc(genuine[here], scores[here]))
        log.info("attacker", run=run, auc=round(pooled[-1], 4))
    return {
        "auc_mean": float(np.mean(pooled)), "auc_std": float(np.std(pooled)), "auc_runs": pooled,
        "genuine_pairs": int(genuine.sum()), "impostor_pairs": int((~genuine).sum()),
        "by_source": {
            s: {"auc_mean": float(np.nanmean(v)) if not np.all(np.isnan(v)) else None,
                "genuine_pairs": int(genuine[pair_source == s].sum()),
                "impostor_pairs": int((~genuine[pair_source == s]).sum())}
            for s, v in by_source.items()
        },
    }


def utility(classifier: Classifier, anonymize: Anonymizer, test: Split) -> dict:
    """Per-label and mean AUC of the real-image classifier on anonymized test images."""
    probabilities = class_probabilities(classifier, anonymize(test.images))
    per_label = {
        name: roc_auc(test.targets[test.masks[:, k] > 0, k], probabilities[test.masks[:, k] > 0, k])
        for k, name in enumerate(LABELS)
    }
    return {"auc_mean": float(np.mean(list(per_label.values()))), "by_label": per_label}
