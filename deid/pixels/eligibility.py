"""Which objects the whole-image pixel stages (deformation, DP-Pix) change: data, in
rules/pixel/deform.toml or a site's own file of the same keys."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from deid.shipped import rules_dir

#: Photometric interpretations the [0, 1] mapping handles.
GREY = frozenset({"MONOCHROME1", "MONOCHROME2"})
_KEYS = frozenset(
    {"modalities", "body_parts", "descriptions", "description_words", "views", "view_may_be_absent",
     "photometric"}
)


def default_rules_path() -> Path:
    """The shipped eligibility rules."""
    return rules_dir() / "pixel" / "deform.toml"


@dataclass(frozen=True)
class Eligibility:
    """Header conditions an object must meet (see rules/pixel/deform.toml for their meaning)."""

    modalities: frozenset[str]
    body_parts: frozenset[str]
    descriptions: tuple[str, ...]
    description_words: frozenset[str]
    views: frozenset[str]
    view_may_be_absent: bool
    photometric: frozenset[str]

    def matches(self, ds: Dataset) -> bool:
        """Whether the stage changes ``ds`` (single-frame, one sample, pixel data included)."""
        if "PixelData" not in ds or int(ds.get("NumberOfFrames", 1) or 1) != 1:
            return False
        if int(ds.get("SamplesPerPixel", 1)) != 1 or _text(ds, "PhotometricInterpretation") not in self.photometric:
            return False
        if _text(ds, "Modality") not in self.modalities:
            return False
        view = _text(ds, "ViewPosition")
        if view not in self.views and (view or not self.view_may_be_absent):
            return False
        body_part = _text(ds, "BodyPartExamined")
        if body_part:
            return body_part in self.body_parts
        words = {word for keyword in self.descriptions for word in re.findall(r"\w+", _text(ds, keyword))}
        return bool(words & self.description_words)

    def describe(self) -> str:
        views = "/".join(sorted(self.views)) + (" or no view" if self.view_may_be_absent else "")
        return (
            f"{'/'.join(sorted(self.modalities))} {'/'.join(sorted(self.body_parts)).lower()}, {views}, "
            f"single-frame {'/'.join(sorted(self.photometric))}"
        )


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip().upper()


def load_eligibility(path: Path | None = None) -> Eligibility:
    """Read the eligibility rules.

    Parameters
    ----------
    path
        A site's rule file; default :func:`default_rules_path`.

    Returns
    -------
    Eligibility
        The conditions.

    Raises
    ------
    ValueError
        If the file cannot be read, misses a key, has an unknown one, or names a photometric
        interpretation other than MONOCHROME1/MONOCHROME2.
    """
    path = path or default_rules_path()
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read pixel eligibility rules {path}: {exc}") from None
    if set(data) != _KEYS:
        missing, unknown = sorted(_KEYS - set(data)), sorted(set(data) - _KEYS)
        raise ValueError(f"pixel eligibility rules {path}: missing {missing}, unknown {unknown}")

    def upper(key: str) -> frozenset[str]:
        return frozenset(str(value).strip().upper() for value in data[key])

    photometric = upper("photometric")
    if not photometric <= GREY:
        raise ValueError(f"pixel eligibility rules {path}: photometric must be among {sorted(GREY)}")
    return Eligibility(
        modalities=upper("modalities"),
        body_parts=upper("body_parts"),
        descriptions=tuple(str(keyword) for keyword in data["descriptions"]),
        description_words=upper("description_words"),
        views=upper("views"),
        view_may_be_absent=bool(data["view_may_be_absent"]),
        photometric=photometric,
    )
