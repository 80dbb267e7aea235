"""The chest radiograph set in ``$DEID_SHARED/cxr``: images, patient-wise splits, labels, pairs.

Images are held in memory as float32 in [0, 1] at the preset's resolution (area-downsized from the 256 px
PNGs). Pairs are always drawn within one source: a cross-source pair is an impostor that any
verifier can spot from the source's look alone.
"""

from __future__ import annotations

import csv
import itertools
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: Labels of the utility task, from the sources' finding text.
LABELS = ("abnormal", "bacterial", "viral")
_NORMAL = {"no finding", "normal"}
_UNKNOWN = {"todo", "inconclusive"}
_BACTERIAL = {"bacterial", "streptococcus", "klebsiella", "e.coli", "legionella", "mycoplasma bacterial pneumonia",
              "pneumonia (bacterial)"}
_VIRAL = {"covid-19", "covid-19, ards", "sars", "influenza", "varicella", "pneumonia (viral)"}
_NOT_INFECTIOUS = {"lipoid", "pneumocystis"}


def labels_of(finding: str) -> tuple[np.ndarray, np.ndarray]:
    """Targets and mask (1 where the label is known) for one finding text."""
    f = finding.strip().lower()
    if f in _UNKNOWN:
        return np.zeros(3, np.float32), np.zeros(3, np.float32)
    if f in _NORMAL:
        return np.zeros(3, np.float32), np.ones(3, np.float32)
    if f in _BACTERIAL:
        return np.array([1, 1, 0], np.float32), np.ones(3, np.float32)
    if f in _VIRAL:
        return np.array([1, 0, 1], np.float32), np.ones(3, np.float32)
    if f in _NOT_INFECTIOUS:
        return np.array([1, 0, 0], np.float32), np.ones(3, np.float32)
    # Abnormal, cause not given (ARDS, unspecified pneumonia, NIH findings).
    return np.array([1, 0, 0], np.float32), np.array([1, 0, 0], np.float32)


@dataclass(frozen=True)
class Split:
    """The images of one split and what is known of them."""

    images: np.ndarray  # (n, size, size) float32 in [0, 1]
    patients: np.ndarray  # (n,) str
    sources: np.ndarray  # (n,) str
    targets: np.ndarray  # (n, labels) float32
    masks: np.ndarray  # (n, labels) float32

    def __len__(self) -> int:
        return len(self.patients)

    def genuine_pairs(self) -> np.ndarray:
        """Every pair of two images of one patient, (k, 2) indices."""
        by_patient: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(self.patients):
            by_patient[p].append(i)
        pairs = [pair for idx in by_patient.values() for pair in itertools.combinations(idx, 2)]
        return np.array(pairs, dtype=np.int64).reshape(-1, 2)

    def impostor_pairs(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` random pairs of two patients of the same source, (count, 2) indices."""
        by_source: dict[str, np.ndarray] = {s: np.flatnonzero(self.sources == s) for s in np.unique(self.sources)}
        weights = np.array([len(v) ** 2 for v in by_source.values()], dtype=float)
        names = list(by_source)
        out: list[tuple[int, int]] = []
        while len(out) < count:
            idx = by_source[names[rng.choice(len(names), p=weights / weights.sum())]]
            i, j = rng.choice(idx, 2, replace=False)
            if self.patients[i] != self.patients[j]:
                out.append((i, j))
        return np.array(out, dtype=np.int64)

    def all_within_source_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Every within-source pair (i < j) and whether it is genuine."""
        pairs, genuine = [], []
        for s in np.unique(self.sources):
            idx = np.flatnonzero(self.sources == s)
            i, j = np.triu_indices(len(idx), 1)
            pairs.append(np.stack([idx[i], idx[j]], 1))
            genuine.append(self.patients[idx[i]] == self.patients[idx[j]])
        return np.concatenate(pairs), np.concatenate(genuine)


def shared_cxr(shared: Path) -> Path:
    root = shared / "cxr"
    if not (root / "images.csv").is_file():
        raise FileNotFoundError(f"no chest radiograph set at {root} (set DEID_SHARED)")
    return root


def load_split(root: Path, split: str, size: int) -> Split:
    """Load one split (``train``, ``val`` or ``test``) at ``size`` x ``size``."""
    with open(root / "images.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split]
    images = np.stack([_read(root / r["file"], size) for r in rows])
    targets, masks = zip(*(labels_of(r["finding"]) for r in rows))
    return Split(
        images=images,
        patients=np.array([r["patient_id"] for r in rows]),
        sources=np.array([r["source"] for r in rows]),
        targets=np.stack(targets),
        masks=np.stack(masks),
    )


def _read(path: Path, size: int) -> np.ndarray:
    image = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    factor = image.shape[0] // size
    if factor > 1:
        image = image.reshape(size, factor, size, factor).mean(axis=(1, 3))
    return image / 255.0
