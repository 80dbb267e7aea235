"""The release description, ``OUT/DEIDENTIFICATION.md``: what was done to the whole release.

Rendered with Jinja2 (a well-kept templating library: the page is text with tables, loops and
conditions, which string concatenation would bury) from ``deid/templates/DEIDENTIFICATION.md.j2``,
out of what the driver knows without reading a DICOM file: the release's identity
(:mod:`deid.release`), the profile's facts (its codes, its description), the ledger's rows and
the deformation model's metadata. It holds no PHI: counts, reasons, codes, new UIDs only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from deid import __version__
from deid.shipped import default_model, rules_dir

DESCRIPTION_NAME = "DEIDENTIFICATION.md"

#: What each CID 7050 code the profile claims means for the released objects.
CODE_EFFECTS = {
    "113100": "identifying attributes of Table E.1-1 removed, emptied or replaced by keyed dummies; "
    "UIDs replaced by keyed 2.25 UIDs; private attributes removed",
    "113111": "keeps private attributes known to be safe (Table E.3.10-1, the object's own "
    "declaration, the profile's private tables); other private attributes removed",
    "113110": "keeps the original UIDs: objects can be linked to their source by UID",
    "113109": "keeps device identity (station name, device serial numbers)",
    "113112": "keeps institution names, addresses and departments",
    "113108": "keeps patient characteristics (sex, age, size, weight, ethnic group, smoking status, "
    "pregnancy status)",
    "113106": "keeps dates and times unchanged",
    "113107": "keeps dates shifted by a per-patient offset (intervals within a patient preserved)",
    "113105": "keeps descriptions and comments, cleaned of the object's identifying values",
    "113104": "keeps structured report content, cleaned concept by concept",
    "113103": "keeps graphic annotations, cleaned of identifying text",
}

_DATE_POLICIES = {
    "full": "Dates and times are kept unchanged (Retain Longitudinal Temporal Information with Full Dates). "
    "Longitudinal Temporal Information Modified is UNMODIFIED.",
    "modified": "Dates are shifted back by a per-patient number of days (1 to 3 650, derived from the key and "
    "the patient, the same in every file and on every run); times are kept, so intervals within a "
    "patient are preserved. Longitudinal Temporal Information Modified is MODIFIED.",
    None: "Dates the profile does not keep are removed, emptied or replaced by a dummy, as Table E.1-1 "
    "says for each; times likewise. Longitudinal Temporal Information Modified is REMOVED.",
}


def own_reports() -> dict[str, frozenset[bytes]]:
    """The files deid writes into a release from fixed text (the marker, this description, the
    manifest and the series list), each with the upper-cased words of that fixed text: its
    template or code, column names, keys. ``deid verify`` does not take a name word found in one
    of them for a leak when it is one of those words (a patient called "Modality" and the
    manifest's ``modality`` column); the objects themselves are searched without exception."""
    from deid.audit import MANIFEST_COLUMNS, MANIFEST_NAME, SERIES_COLUMNS, SERIES_NAME
    from deid.release import MARKER_NAME

    here = Path(__file__).parent
    fixed = [here / "templates" / f"{DESCRIPTION_NAME}.j2", here / "description.py", here / "release.py"]
    text = b" ".join(path.read_bytes() for path in fixed)
    text += " ".join(MANIFEST_COLUMNS + SERIES_COLUMNS).encode()
    words = frozenset(word.upper() for word in re.findall(rb"[0-9A-Za-z]+", text))
    return dict.fromkeys((MARKER_NAME, DESCRIPTION_NAME, MANIFEST_NAME, SERIES_NAME), words)


def rules_edition() -> str:
    """The PS3.15 edition the shipped rules were generated from (``2026c``), from their header."""
    with (rules_dir() / "basic.toml").open() as handle:
        match = re.search(r"PS3\.15 (\S+?);", handle.readline())
    return match[1] if match else "unknown"


def write_description(
    output_root: Path,
    audit_dir: Path,
    identity: dict[str, Any],
    facts: dict[str, Any],
    rows: list[tuple],
    model: Path | None,
) -> None:
    """Write ``OUT/DEIDENTIFICATION.md``.

    The template is rendered only when what it says has changed (a digest of its inputs is kept
    in the audit folder), so that a nightly run with nothing to do does not load Jinja2.

    Parameters
    ----------
    output_root
        The release folder.
    audit_dir
        The release's audit folder.
    identity
        The release's identity (:func:`deid.release.identity`).
    facts
        The profile's facts (:func:`deid.pipeline.profile_facts`): name, description, options,
        codes, weakened.
    rows
        The ledger's rows as :meth:`deid.audit.Ledger.write_reports` returns them.
    model
        The deformation model when the deformation runs (``None``: the shipped one).
    """
    from deid.release import write_text_atomic

    context = _context(output_root, identity, facts, rows, model)
    template = Path(__file__).with_name("templates") / f"{DESCRIPTION_NAME}.j2"
    digest = hashlib.sha256(template.read_bytes() + json.dumps(context, sort_keys=True).encode()).hexdigest()
    stamp = audit_dir / "description.sha256"
    target = output_root / DESCRIPTION_NAME
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    environment = Environment(
        loader=FileSystemLoader(template.parent), undefined=StrictUndefined, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True,
    )
    write_text_atomic(target, environment.get_template(template.name).render(**context))
    write_text_atomic(stamp, digest + "\n")


def _context(
    output_root: Path,
    identity: dict[str, Any], facts: dict[str, Any], rows: list[tuple], model: Path | None
) -> dict[str, Any]:
    """What the template says, from the release's identity, the profile's facts and the ledger."""
    from deid.release import model_metadata

    counts = Counter(row[1] for row in rows)
    written = [row for row in rows if row[1] == "written"]
    pixels = identity["pixels"]
    model_info = None
    if pixels.get("whole_image") == "deform":
        info = model_metadata(model or default_model())
        model_info = {
            "name": info.get("name", ""),
            "preset": info.get("preset", ""),
            "mu": info.get("mu", ""),
            "sha256": info.get("sha256", ""),
            "measured": measured_figures(info.get("privacy")),
        }
    return {
        "version": __version__,
        "edition": rules_edition(),
        "identity": identity,
        "profile_description": facts.get("description", ""),
        "profile_argument": Path(identity["profile_source"]).name,
        "extra_options": [o for o in identity["options"] if o not in facts.get("own_options", identity["options"])],
        "counts": {status: counts.get(status, 0) for status in ("written", "quarantined", "skipped")},
        "totals": {
            "patients": len({row[2].split("/", 1)[0] for row in written}),
            "studies": len({row[2].rsplit("/", 2)[0] for row in written}),
            "series": len({row[2].rsplit("/", 1)[0] for row in written}),
        },
        "codes": [
            {"value": value, "meaning": meaning, "effect": CODE_EFFECTS.get(value, "")}
            for value, meaning in facts["codes"]
        ],
        "weakened": facts.get("weakened", []),
        "date_policy": _DATE_POLICIES[facts.get("date_option")],
        "pixel_lines": _pixel_lines(pixels, written),
        "model": model_info,
        "dicomdir": (output_root / "DICOMDIR").is_file(),
        "quarantine": sorted(
            Counter(row[6] for row in rows if row[1] == "quarantined").items(), key=lambda item: (-item[1], item[0])
        ),
    }


def measured_figures(privacy: Any) -> dict[str, str]:
    """The figures a model's metadata records of its measured privacy (``privacy``, as
    :func:`deid.train.commands.privacy_record` writes it), one phrase each; empty when none."""
    if not isinstance(privacy, dict) or "reid_auc" not in privacy:
        return {}
    figures = {
        "re-identification AUC, strongest re-trained attacker, weighted over sources (test split)":
            f"{privacy['reid_auc']:.3f} ± {privacy.get('reid_auc_std', 0):.3f} on deformed images against "
            f"{privacy['real_reid_auc']:.3f} ± {privacy.get('real_reid_auc_std', 0):.3f} on real ones",
    }
    if "utility_auc" in privacy:
        figures["utility, classifier mean AUC"] = (
            f"{privacy['utility_auc']:.3f} on deformed images against {privacy['real_utility_auc']:.3f} on real ones"
        )
    if "runs" in privacy:
        figures["attackers trained"] = str(privacy["runs"])
    figures["the model card's privacy milestone"] = "met" if privacy.get("milestone") else "not met"
    if privacy.get("card"):
        figures["model card"] = f"`{privacy['card']}` in deid's source"
    return figures


def _pixel_lines(pixels: dict[str, Any], written: list[tuple]) -> list[str]:
    """One line per pixel stage: what it does, its settings, how many objects it changed."""
    changed = Counter(stage for row in written for stage in row[5].split("+") if stage)
    if pixels.get("text") == "off":
        return [
            "No pixel stage ran (`--header-only`): images that may carry burned-in text were quarantined, "
            "not released; pixel data is as acquired."
        ]
    mode = {
        "per modality": "per modality: sensitive (safe words such as markers and units kept) for radiographs "
        "and CT/MR/PET/NM, all for ultrasound, screen captures and documents",
        "all": "all: every line found",
        "sensitive": "sensitive: safe words such as markers and units kept",
    }.get(pixels["text"], pixels["text"])
    lines = [
        "Burned-in text: images that may carry it (Burned In Annotation YES, every Secondary Capture, and unless "
        "the header says NO, ultrasound, screen captures, radiographs and CT/MR localizers) were searched by "
        "known regions and OCR; text found was masked "
        f"({pixels['text_fill']} fill, mode {mode}). Objects masked: {changed['text']}; they carry CID 7050 "
        "113101 Clean Pixel Data and Burned In Annotation NO. Images where nothing was found keep their pixel "
        "data byte for byte."
    ]
    stage = pixels.get("whole_image")
    if stage == "deform":
        lines.append(
            "Whole image: the learned deformation (a reproduction of PriCheXy-Net) on frontal chest "
            f"radiographs; objects deformed: {changed['deform']}. They are marked DERIVED, with Derivation "
            "Description, DCM 113085 Spatial resampling and 113101 Clean Pixel Data."
        )
    elif stage == "dp-pix":
        dp = pixels["dp_pix"]
        lines.append(
            f"Whole image: DP-Pix (cells of {dp['block']} pixels, epsilon {dp['epsilon']}, m {dp['m']}) on "
            f"frontal chest radiographs; objects changed: {changed['dp-pix']}."
        )
    else:
        lines.append("Whole image: no stage (`--pixels none`); anatomy is as acquired.")
    if pixels.get("eligibility_sha256"):
        digest = pixels["eligibility_sha256"]
        lines.append(f"Which objects the whole-image stage takes: a site's rules (sha256 {digest}…).")
    return lines


__all__ = ["DESCRIPTION_NAME", "write_description", "rules_edition", "own_reports", "CODE_EFFECTS"]
