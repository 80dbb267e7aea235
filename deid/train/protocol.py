"""The evaluation protocol: re-identification by every attacker, and utility.

Privacy: each anonymized test image is linked to the real test images of its source (only
within-source pairs are scored: a cross-source pair is an impostor any attacker spots from the
source's look). The attackers are the fixed similarities of :mod:`deid.train.attacks` and
``runs`` fresh learned attackers (:mod:`deid.train.fusion`) trained on the anonymizer's output of
the train split.
An anonymizer's figure is the **maximum over attackers**: for each run, the highest AUC of any
attacker (the fixed ones and that run's learned one), per source and pooled; the weighted
column averages the sources with at least :data:`MIN_GENUINE_PAIRS` genuine test pairs by their
genuine pairs. Mean and standard deviation are over runs.

Utility: the classifier trained on real images scores the anonymized test images; the figure is
the mean over labels of the per-label AUC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import structlog

from deid.train.attacks import (
    BASELINES,
    BOTH_ANONYMIZED,
    REGISTRATION_GRID,
    aligned_scores,
    pair_scores,
    registration_scores,
)
from deid.train.data import LABELS, Split
from deid.train.fusion import FixedChannels, train_fusion_attacker
from deid.train.loops import class_probabilities
from deid.train.metrics import roc_auc
from deid.train.networks import Classifier
from deid.train.presets import Preset

log = structlog.get_logger("deid.train")

#: Sources with fewer genuine test pairs are shown but left out of the weighted column.
MIN_GENUINE_PAIRS = 40

Anonymizer = Callable[[np.ndarray], np.ndarray]


def reidentification(preset: Preset, anonymize: Anonymizer, train: Split, val: Split, test: Split,
                     runs: int, seed: int = 100, attacker_anonymize: Anonymizer | None = None,
                     min_genuine_pairs: int = MIN_GENUINE_PAIRS, search: tuple | None = None) -> dict:
    """Re-identification AUC of every attacker against ``anonymize``, and their maximum (over the
    fixed attackers only when ``runs`` is 0).

    ``attacker_anonymize`` is the public anonymizer as the attacker can run it on its own real
    images (``ncc32-both``): for a keyed transform, the same method under the attacker's own key;
    by default ``anonymize`` itself (a deterministic model anyone can replay).
    ``min_genuine_pairs``: the fewest genuine pairs of a source in the weighted column.
    ``search``: the registration attacker's grid (default :data:`REGISTRATION_GRID`; a keyed
    transform's evaluation widens it to the transform's public magnitudes).

    Returns
    -------
    dict
        ``sources`` (genuine and impostor pairs of each), ``scored`` (the sources of the weighted
        column), ``attackers`` (per attacker: ``pooled``, ``weighted`` and ``by_source`` lists, one
        value per run for learned attackers, one for fixed ones), ``max`` (the same, the
        maximum over attackers, one value per run) and, with learned attackers, ``learned_choices``
        (per run, each source's scorer: the fusion or the channel it fell back to).
    """
    anon_test = anonymize(test.images)
    pairs, genuine = test.all_within_source_pairs()
    pair_source = test.sources[pairs[:, 0]]
    sources = {s: {"genuine_pairs": int(genuine[pair_source == s].sum()),
                   "impostor_pairs": int((~genuine[pair_source == s]).sum())} for s in np.unique(test.sources)}
    scored = [s for s, v in sources.items() if v["genuine_pairs"] >= min_genuine_pairs]

    def weighted(by_source: dict) -> float:
        if not scored:
            return float("nan")
        return sum(by_source[s] * sources[s]["genuine_pairs"] for s in scored) / sum(
            sources[s]["genuine_pairs"] for s in scored)

    def figures(scores: np.ndarray) -> dict:
        by_source = {s: roc_auc(genuine[pair_source == s], scores[pair_source == s]) for s in sources}
        return {"pooled": roc_auc(genuine, scores), "weighted": weighted(by_source), "by_source": by_source}

    fixed = {name: figures(pair_scores(features(anon_test), features(test.images), pairs))
             for name, features in BASELINES.items()}
    registered = registration_scores(anon_test, test.images, pairs, grid=search or REGISTRATION_GRID)
    fixed["registration"] = figures(registered)
    fixed["ncc32-aligned"] = figures(aligned_scores(anon_test, test.images, test.sources, pairs))
    both_name, both = BOTH_ANONYMIZED
    attacker_side = anon_test if attacker_anonymize is None else attacker_anonymize(test.images)
    fixed[both_name] = figures(pair_scores(both(anon_test), both(attacker_side), pairs))
    learned, choices = [], []
    if runs:
        anon_train = replace(train, images=anonymize(train.images))
        anon_val = replace(val, images=anonymize(val.images))
        fixed_channels = FixedChannels(anon_train, train, anon_val, val, search or REGISTRATION_GRID)
        test_columns = fixed_channels.columns(anon_test, test.images, test.sources, pairs)
    for run in range(runs):
        attacker = train_fusion_attacker(preset, anon_train, train, anon_val, val, seed + run, fixed=fixed_channels)
        learned.append(figures(attacker.scores(anon_test, test.images, test.sources, pairs, leading=test_columns)))
        choices.append(attacker.channel_choices())
        log.info("attacker", run=run, weighted=round(learned[-1]["weighted"], 4))
    maxima: list[dict[str, Any]] = [
        {"pooled": float(np.nanmax([f["pooled"] for f in [*fixed.values(), run]])),
         "by_source": {s: float(np.nanmax([f["by_source"][s] for f in [*fixed.values(), run]])) for s in sources}}
        for run in (learned or [{"pooled": float("nan"), "by_source": dict.fromkeys(sources, float("nan"))}])
    ]
    for m in maxima:
        m["weighted"] = weighted(m["by_source"])

    def as_lists(runs_: list[dict]) -> dict:
        return {"pooled": [r["pooled"] for r in runs_], "weighted": [r["weighted"] for r in runs_],
                "by_source": {s: [r["by_source"][s] for r in runs_] for s in sources}}

    return {
        "sources": sources, "scored": scored,
        "attackers": {**{name: as_lists([f]) for name, f in fixed.items()},
                      **({"learned": as_lists(learned)} if learned else {})},
        "max": as_lists(maxima),
        **({"learned_choices": choices} if choices else {}),
    }


def over_keys(results: list[dict]) -> dict:
    """One :func:`reidentification` result from the same protocol run under several evaluation keys
    of a keyed transform: every list (a value per learned run, one for a fixed attacker) holds the
    values of every key in turn, so that a mean ± std over it is over keys and runs alike."""
    first = results[0]

    def joined(parts: list[dict]) -> dict:
        return {"pooled": [v for part in parts for v in part["pooled"]],
                "weighted": [v for part in parts for v in part["weighted"]],
                "by_source": {s: [v for part in parts for v in part["by_source"][s]] for s in first["sources"]}}

    if len(results) == 1:
        return first
    return {"sources": first["sources"], "scored": first["scored"],
            "attackers": {name: joined([r["attackers"][name] for r in results]) for name in first["attackers"]},
            "max": joined([r["max"] for r in results]), "keys": len(results),
            **({"learned_choices": [c for r in results for c in r["learned_choices"]]}
               if "learned_choices" in first else {})}


def over_keys_utility(results: list[dict]) -> dict:
    """The mean of :func:`utility` results under several evaluation keys, with each key's mean AUC."""
    if len(results) == 1:
        return results[0]
    labels = results[0]["by_label"]
    return {"auc_mean": float(np.mean([r["auc_mean"] for r in results])),
            "by_label": {name: float(np.mean([r["by_label"][name] for r in results])) for name in labels},
            "auc_mean_by_key": [r["auc_mean"] for r in results]}


def utility(classifier: Classifier, anonymize: Anonymizer, test: Split) -> dict:
    """Per-label and mean AUC of the real-image classifier on anonymized test images."""
    probabilities = class_probabilities(classifier, anonymize(test.images))
    per_label = {
        name: roc_auc(test.targets[test.masks[:, k] > 0, k], probabilities[test.masks[:, k] > 0, k])
        for k, name in enumerate(LABELS)
    }
    return {"auc_mean": float(np.mean(list(per_label.values()))), "by_label": per_label}
