"""deid: batch DICOM de-identification.

PS3.15 Annex E header profiles, keyed pseudonyms, pixel cleaning and an audit trail.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deid-dicom")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
