"""The secret key behind every pseudonym: where it comes from and how it is kept."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import platformdirs
import structlog

#: Environment variable naming the key file.
KEY_FILE_ENV = "DEID_KEY_FILE"


class KeyFileError(Exception):
    """The key file cannot be read or is unsafe."""


def default_key_path() -> Path:
    """The per-user key file created when no key is given."""
    return Path(platformdirs.user_config_dir("deid")) / "key"


def key_path(key_file: Path | None) -> Path:
    """The key file a run reads: ``key_file``, else ``$DEID_KEY_FILE``, else :func:`default_key_path`."""
    if key_file is None and os.environ.get(KEY_FILE_ENV):
        return Path(os.environ[KEY_FILE_ENV])
    return key_file or default_key_path()


def load_key(key_file: Path | None, create: bool = True) -> bytes | None:
    """Read the secret key, creating the per-user default key once if none is given.

    A key file that other users may read is accepted (container secrets are often mounted
    0444) with one warning.

    Parameters
    ----------
    key_file
        Explicit key file, else ``$DEID_KEY_FILE``, else :func:`default_key_path`.
    create
        Create the per-user default key if it does not exist; if false (``--dry-run``), return
        ``None`` instead.

    Returns
    -------
    bytes or None
        The key (file content without surrounding whitespace); ``None`` only when the default
        key does not exist and ``create`` is false.

    Raises
    ------
    KeyFileError
        If the key file is missing, empty or shorter than 16 bytes.
    """
    default = key_file is None and not os.environ.get(KEY_FILE_ENV)
    key_file = key_path(key_file)
    if default and not key_file.exists():
        if not create:
            return None
        key_file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        structlog.get_logger().warning(
            "created a new secret key; keep it safe and pass it with --key-file "
            "so that pseudonyms stay the same on other machines",
            key_file=str(key_file),
        )
    try:
        key = key_file.read_bytes().strip()
        mode = key_file.stat().st_mode
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {key_file}: {exc.strerror}") from exc
    if len(key) < 16:
        raise KeyFileError(f"key file {key_file} holds fewer than 16 bytes")
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        structlog.get_logger().warning(
            f"key file {key_file} is readable by other users (mode {stat.S_IMODE(mode):04o}); "
            f"unless it is a read-only secret mount, run: chmod 600 {key_file}"
        )
    return key
