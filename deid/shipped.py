"""Where the files that ship with deid lie: the rule profiles (rules/) and the exported models
(models/), installed as the packages ``deid._rules`` and ``deid._models``.

Kept free of pydicom and numpy, so that a run with nothing to do loads neither.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path


def rules_dir() -> Path:
    """Return the folder holding the shipped rule files."""
    return Path(str(resources.files("deid._rules")))


def default_model() -> Path:
    """Return the shipped deformation model, models/deform.onnx."""
    return Path(str(resources.files("deid._models"))) / "deform.onnx"


def model_privacy(model: Path) -> dict | None:
    """The measured privacy that the metadata beside ``model`` (same name, ``.json``) records, or
    ``None`` when it records none or cannot be read (the stage itself reports unreadable metadata).

    Keys: ``reid_auc`` and ``real_reid_auc`` (the max-attacker re-identification AUC, weighted over
    sources, of the model and of real images), their ``_std``, ``utility_auc``, ``real_utility_auc``,
    ``milestone`` (whether the card's bar was met) and ``card``.
    """
    try:
        privacy = json.loads(model.with_suffix(".json").read_text()).get("privacy")
    except (OSError, ValueError, AttributeError):
        return None
    return privacy if isinstance(privacy, dict) else None


def default_pixels() -> str:
    """``deform`` when the shipped model's measured privacy meets its card's milestone, else ``none``."""
    privacy = model_privacy(default_model())
    return "deform" if privacy is not None and privacy.get("milestone") is True else "none"


def privacy_summary(privacy: dict | None) -> str:
    """One phrase on a model's measured re-identification, for the dry run and the manifest."""
    if privacy is None:
        return "no measured privacy on record"
    return (f"measured max-attacker re-ID AUC {privacy['reid_auc']:.3f} against {privacy['real_reid_auc']:.3f} "
            f"on real images ({privacy['card']})")
