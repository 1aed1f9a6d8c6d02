"""Small file helpers: secrets are created 0600 from the start, never chmod-ed after the fact."""

from __future__ import annotations

import os
from pathlib import Path

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


def write_secret(path: Path, data: bytes) -> None:
    """Write `data` to a new file readable only by its owner (mode 0600 at creation time).

    An existing file is replaced atomically: the new content goes to a fresh 0600 temporary file first,
    so there is never a moment where key material sits in a file with wider permissions.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_public(path: Path, data: bytes | str) -> None:
    """Write a non-secret file (certificates, configs, public key directory), replacing it atomically."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PUBLIC_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)
    os.replace(tmp, path)


def make_private_dir(path: Path) -> None:
    """Create a directory (and parents) that only its owner can enter (0700), for CA material."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
