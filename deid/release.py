"""What a release was made with, and how to replace it whole.

``OUT/.deid-release.json`` (the *marker*, no PHI) names the key by its fingerprint (a keyed
digest, never the key), the profile, the options and the pixel configuration the release was
made with. It is what identifies a folder as a deid release. A run whose identity differs is
refused (:class:`ReleaseMismatch`): its outputs would land beside the old ones under other
pseudonyms, and the crosswalk would no longer describe the release. ``deid run --rebuild``
instead builds a whole new release aside and swaps it in (:func:`swap_in`).

Kept free of pydicom, so that a run with nothing to do stays light.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from deid import __version__
from deid.config import RunConfig
from deid.pseudonyms import Pseudonymizer
from deid.shipped import default_model

#: The marker file that identifies a deid release, in the release folder.
MARKER_NAME = ".deid-release.json"
#: Its copy in the audit folder, which tells an interrupted swap (:func:`recover`).
AUDIT_COPY_NAME = "release.json"
#: Marker format version.
FORMAT = 1
#: What must agree between a release and a run that adds to it.
COMPARED = ("key_fingerprint", "profile", "options", "pixels")
#: Suffix of the folders a rebuild is made in, beside the release and the audit folder.
ASIDE_SUFFIX = ".deid-rebuild"


class ReleaseMismatch(Exception):
    """The output folder holds a release made with another key, profile, options or pixel
    configuration; the message says what differs and how to proceed."""


def identity(config: RunConfig, profile: str, options: tuple[str, ...]) -> dict[str, Any]:
    """What the release made by ``config`` is, as the marker records it.

    Parameters
    ----------
    config
        The run configuration.
    profile, options
        The compiled profile's name and the options in force (those it declares included).

    Returns
    -------
    dict
        ``tool``, ``format``, ``version``, ``key_fingerprint``, ``profile``, ``profile_source``,
        ``options`` and ``pixels``; JSON-serialisable, without PHI.

    Raises
    ------
    ValueError
        If the deformation model's metadata cannot be read.
    """
    source = config.profile
    if Path(source).suffix == ".toml":
        source = str(Path(source).resolve())
    return {
        "tool": "deid",
        "format": FORMAT,
        "version": __version__,
        "key_fingerprint": Pseudonymizer(config.key).fingerprint(),
        "profile": profile,
        "profile_source": source,
        "options": list(options),
        "pixels": pixel_configuration(config),
    }


def pixel_configuration(config: RunConfig) -> dict[str, Any]:
    """The pixel stages of ``config``: text stage mode and fill, whole-image stage, model or
    DP-Pix parameters, and a digest of a site's eligibility rules."""
    if config.header_only:
        return {"text": "off", "whole_image": "none"}
    pixels: dict[str, Any] = {
        "text": config.text_mode or "per modality",
        "text_fill": config.text_fill,
        "whole_image": config.pixels,
    }
    if config.pixels == "deform":
        info = model_metadata(Path(config.deform_model) if config.deform_model else default_model())
        pixels["model"] = {"name": info.get("name", ""), "sha256": info.get("sha256", "")}
    elif config.pixels == "dp-pix":
        block, epsilon, m = config.dp_pix
        pixels["dp_pix"] = {"block": block, "epsilon": epsilon, "m": m}
    if config.pixels != "none" and config.deform_rules:
        pixels["eligibility_sha256"] = hashlib.sha256(Path(config.deform_rules).read_bytes()).hexdigest()[:16]
    return pixels


def model_metadata(model: Path) -> dict[str, Any]:
    """The metadata JSON beside an exported deformation model.

    Raises
    ------
    ValueError
        If it is missing or not JSON.
    """
    metadata = model.with_suffix(".json")
    try:
        return dict(json.loads(metadata.read_text()))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the deformation model's metadata {metadata}: {exc}") from None


def read_marker(output_root: Path) -> dict[str, Any] | None:
    """The marker of the release in ``output_root``, or ``None`` if there is none (or it is
    not a deid marker)."""
    try:
        marker = json.loads((output_root / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("tool") == "deid" else None


def differences(recorded: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """What differs between two identities, one phrase each (``key fingerprint 1a2b… (this run:
    3c4d…)``), in :data:`COMPARED` order."""
    found = []
    for field in COMPARED:
        old, new = recorded.get(field), wanted.get(field)
        if old == new:
            continue
        if field == "pixels" and isinstance(old, dict) and isinstance(new, dict):
            for name in sorted(set(old) | set(new)):
                if old.get(name) != new.get(name):
                    found.append(f"pixels {name} {_show(old.get(name))} (this run: {_show(new.get(name))})")
            continue
        label = field.replace("_", " ")
        found.append(f"{label} {_show(old)} (this run: {_show(new)})")
    return found


def _show(value: Any) -> str:
    if value is None or value == [] or value == "":
        return "none"
    if isinstance(value, list):
        return "+".join(map(str, value))
    if isinstance(value, dict):
        return ",".join(f"{k}={_show(v)}" for k, v in sorted(value.items()))
    return str(value)


def claim(output_root: Path, wanted: dict[str, Any]) -> None:
    """Check that ``output_root`` is, or may become, the release ``wanted`` describes, and
    write its marker.

    Raises
    ------
    ReleaseMismatch
        If ``output_root`` holds a release made with another key, profile, options or pixel
        configuration.
    """
    recorded = read_marker(output_root)
    if recorded is not None:
        changed = differences(recorded, wanted)
        if changed:
            raise ReleaseMismatch(
                f"{output_root} was made with {'; '.join(changed)}: write to another output folder, "
                "or pass --rebuild to replace the whole release"
            )
    write_json_atomic(output_root / MARKER_NAME, wanted)


def write_json_atomic(path: Path, value: dict[str, Any]) -> None:
    """Write ``value`` as JSON to ``path`` atomically; leave an identical file untouched."""
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically; leave an identical file untouched."""
    data = text.encode()
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def aside(folder: Path) -> Path:
    """Where a rebuild makes the new ``folder``: beside it, on the same file system."""
    return folder.with_name(folder.name + ASIDE_SUFFIX)


def swap_in(output_root: Path, audit_dir: Path) -> None:
    """Put the rebuilt release and audit folder (:func:`aside`) in place of the old ones and
    delete the old ones.

    The audit folder goes first: until the release itself is swapped, the old release stays
    whole and served, and :func:`recover` finishes the job if this process dies in between.
    Each swap is one atomic exchange where the kernel offers it (``renameat2``).
    """
    for folder in (audit_dir, output_root):
        new = aside(folder)
        if new.exists():
            _exchange(new, folder)
    for folder in (audit_dir, output_root):
        shutil.rmtree(aside(folder), ignore_errors=True)


def recover(output_root: Path, audit_dir: Path) -> None:
    """Finish a rebuild that was killed while it swapped folders, or clear what a rebuild
    killed earlier left aside.

    The audit folder keeps a copy of its release's marker: an audit folder that has been
    swapped in while the release has not tells the interrupted swap.
    """
    new_release = aside(output_root)
    audit_copy = _read_json(audit_dir / AUDIT_COPY_NAME)
    if (
        new_release.exists()
        and audit_copy is not None
        and read_marker(new_release) == audit_copy
        and read_marker(output_root) != audit_copy
    ):
        _exchange(new_release, output_root)  # the audit folder was swapped already
    for folder in (new_release, aside(audit_dir)):
        shutil.rmtree(folder, ignore_errors=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(new: Path, old: Path) -> None:
    """Swap ``new`` into ``old``'s place; ``old`` ends at ``new``'s path (or nowhere if it did
    not exist)."""
    if not old.exists():
        os.rename(new, old)
        return
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is not None:
        done = renameat2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(old), _RENAME_EXCHANGE)
        if done == 0:
            return
        if ctypes.get_errno() not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(old))
    parked = old.with_name(old.name + ".deid-old")
    shutil.rmtree(parked, ignore_errors=True)
    os.rename(old, parked)
    os.rename(new, old)
    os.rename(parked, new)


__all__ = [
    "MARKER_NAME", "ReleaseMismatch", "identity", "read_marker", "claim", "swap_in", "recover",
    "aside",
]
