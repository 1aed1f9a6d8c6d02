"""Replace a file so that after a crash or power loss it holds either the old or the new bytes, never a mix.

One helper for every durable write (privacy ledger, device state, outbox, flat vectors, keys and certificates,
the cloud's optimizer state). The temporary file is created fresh (`O_EXCL`) with the final mode, so secret
material never sits in a file with wider permissions, not even a stale temporary one.
"""

from __future__ import annotations

import os
from pathlib import Path

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


def write_atomic(path: Path, data: bytes, *, mode: int = SECRET_MODE) -> None:
    """Write `data` to `path` atomically and durably (file and directory fsynced), created with `mode`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover from a crash may carry another mode: never reuse it
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
