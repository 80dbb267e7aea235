"""deid: batch DICOM de-identification.

PS3.15 Annex E header profiles, keyed pseudonyms, pixel cleaning and an audit trail.

The Python API (:mod:`deid.api`): :func:`deidentify` one pydicom dataset, or a :class:`Pipeline`
for many, each giving a :class:`Result`. They are imported on first use, so that ``import deid``
(every ``deid`` command and worker pays it) loads neither pydicom nor the stages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

#: The release; pyproject.toml reads it from here (a static string: no package metadata lookup
#: at import, which every worker process pays).
__version__ = "0.1.0"

if TYPE_CHECKING:
    from deid.api import Pipeline, Result, deidentify

_API = frozenset({"deidentify", "Pipeline", "Result"})


def __getattr__(name: str) -> Any:
    if name in _API:
        from deid import api

        return getattr(api, name)
    raise AttributeError(f"module 'deid' has no attribute {name!r}")


__all__ = ["__version__", "deidentify", "Pipeline", "Result"]
