"""Small file helpers: secrets are created 0600 from the start, never chmod-ed after the fact."""

from __future__ import annotations

import os
from pathlib import Path

from fl_protocol.atomic_file import PUBLIC_MODE, SECRET_MODE, write_atomic


def write_secret(path: Path, data: bytes) -> None:
    """Write `data` to a file readable only by its owner: 0600 from creation, replaced atomically."""
    write_atomic(path, data, mode=SECRET_MODE)


def write_public(path: Path, data: bytes | str) -> None:
    """Write a non-secret file (certificates, configs, public key directory), replacing it atomically."""
    write_atomic(path, data.encode("utf-8") if isinstance(data, str) else data, mode=PUBLIC_MODE)


def make_private_dir(path: Path) -> None:
    """Create a directory (and parents) that only its owner can enter (0700), for CA material."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
