"""Where the files that ship with deid lie: the rule profiles (rules/) and the exported models
(models/), installed as the packages ``deid._rules`` and ``deid._models``.

Kept free of pydicom and numpy, so that a run with nothing to do loads neither.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def rules_dir() -> Path:
    """Return the folder holding the shipped rule files."""
    return Path(str(resources.files("deid._rules")))


def default_model() -> Path:
    """Return the shipped deformation model, models/deform.onnx."""
    return Path(str(resources.files("deid._models"))) / "deform.onnx"
