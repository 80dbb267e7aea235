"""The private review page of a run: what the pixel stages changed, for a steward to look at.

``AUDIT/review/index.html`` (it shows PHI: the images before cleaning and the text OCR read; it
lives in the audit folder, never in the release) lists every written object whose pixels a stage
changed, with a downsized picture before and after and each region outlined by the layer that
found it; a sample of the objects the text stage examined and found nothing in; and the
quarantined inputs with their reasons. It is one static HTML file rendered with Jinja2 from
``deid/templates/review.html.j2``, with the pictures as relative files beside it (``img/``): it
works offline and opens in any browser.

The workers make the pictures (:class:`Preview`, small PNG files) and hand them back in their
result, so the page also works when they run on a Dask cluster; the driver writes them and
records the regions in the ledger.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deid.stage import Instance

#: Where the page lies in the audit folder, and its pictures.
REVIEW_DIR = "review"
IMAGE_DIR = "img"
#: Objects where nothing was found that a run shows at most (a deterministic sample).
SAMPLE_SIZE = 12
#: What each layer's name means on the page.
LAYER_NAMES = {
    "rules": "known region",
    "ultrasound": "outside ultrasound regions",
    "ocr": "OCR",
}


@dataclass(frozen=True)
class Preview:
    """Downsized pictures of an object's first frame, as PNG bytes (PHI: private).

    Attributes
    ----------
    before
        As the first pixel stage found it.
    after
        As written; ``None`` when no stage changed the pixels (a sampled object).
    columns, rows
        The full-resolution size, which the region boxes refer to.
    """

    before: bytes
    after: bytes | None
    columns: int
    rows: int


def sampled(dst: str, rate: float) -> bool:
    """Whether the object written to ``dst`` is in the sample of objects where nothing was found:
    a deterministic draw (the same objects every run) with probability ``rate``."""
    return int(hashlib.sha256(dst.encode()).hexdigest()[:8], 16) < rate * 0x100000000


def sample_rate(files: int) -> float:
    """The sampling probability that gives about :data:`SAMPLE_SIZE` objects out of ``files``."""
    return min(1.0, 2 * SAMPLE_SIZE / max(1, files))


def preview_of(item: Instance, dst: str, sample_rate: float) -> Preview | None:
    """The pictures of ``item`` (written to ``dst``) for the review page, made in the worker: of
    every object whose pixels changed, and of a sample (:func:`sampled`) of those a pixel stage
    examined without a change. ``None`` otherwise, or if they cannot be made (the object is
    written all the same, and the page says its picture is missing)."""
    if item.before is None or not (item.pixels_changed or sampled(dst, sample_rate)):
        return None
    from deid.pixels.render import display_limits, shrink, thumbnail

    ds = item.ds
    try:
        before = shrink(item.before, ds)
        limits = display_limits(before, ds)  # both pictures in the grey scale of the first
        after = thumbnail(item.after, ds, limits) if item.pixels_changed else None
        return Preview(thumbnail(before, ds, limits), after, int(ds.Columns), int(ds.Rows))
    except Exception:  # noqa: BLE001 - a picture for the page is no reason to lose the object
        return None


def write_preview(audit_dir: Path, token: str, preview: Preview) -> str:
    """Write ``preview``'s pictures into the review folder, named by the input's log token.

    Returns
    -------
    str
        ``changed`` or ``sample``: what the ledger records of the object.
    """
    folder = audit_dir / REVIEW_DIR / IMAGE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{token}-before.png").write_bytes(preview.before)
    if preview.after is not None:
        (folder / f"{token}-after.png").write_bytes(preview.after)
        return "changed"
    return "sample"


def review_page(audit_dir: Path) -> Path:
    """Where the review page of the release with audit folder ``audit_dir`` lies."""
    return audit_dir / REVIEW_DIR / "index.html"


def write_page(audit_dir: Path, context: dict[str, Any]) -> Path:
    """Render the review page into ``AUDIT/review/index.html``.

    Parameters
    ----------
    audit_dir
        The run's audit folder.
    context
        ``changed`` and ``samples`` (objects: ``token``, ``output``, ``stages``, ``notes``,
        ``columns``, ``rows``, ``regions``), ``quarantined`` (``input``, ``reason``), ``counts``,
        ``profile``, ``options``, ``examined`` (objects the text stage looked at).

    Returns
    -------
    Path
        The page.
    """
    from jinja2 import Environment, PackageLoader, select_autoescape

    environment = Environment(
        loader=PackageLoader("deid", "templates"), autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True, lstrip_blocks=True,
    )
    environment.filters["layer_name"] = lambda layer: LAYER_NAMES.get(layer, layer)
    html = environment.get_template("review.html.j2").render(image_dir=IMAGE_DIR, **context)
    page = review_page(audit_dir)
    page.parent.mkdir(parents=True, exist_ok=True)
    tmp = page.with_name(".index.html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(page)
    return page


__all__ = [
    "Preview", "preview_of", "sampled", "sample_rate", "write_preview", "write_page", "review_page",
    "REVIEW_DIR",
]
