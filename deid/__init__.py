"""deid: batch DICOM de-identification.

PS3.15 Annex E header profiles, keyed pseudonyms, pixel cleaning and an audit trail.
"""

#: The release; pyproject.toml reads it from here (a static string: no package metadata lookup
#: at import, which every worker process pays).
__version__ = "0.1.0"

__all__ = ["__version__"]
