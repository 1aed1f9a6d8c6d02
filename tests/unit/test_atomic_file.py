"""write_atomic: the final mode is set at creation, even over a stale temporary file with wider rights."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fl_protocol.atomic_file import PUBLIC_MODE, write_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secret_is_0600_even_over_a_stale_world_readable_temp(tmp_path: Path) -> None:
    target = tmp_path / "node.key"
    stale = tmp_path / ".node.key.tmp"
    stale.write_bytes(b"old")
    stale.chmod(0o666)  # left by a crash, with wide rights: must not be reused
    write_atomic(target, b"secret")
    assert target.read_bytes() == b"secret" and _mode(target) == 0o600
    assert not stale.exists()


def test_replaces_content_and_honours_public_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "ca.crt"
    write_atomic(target, b"v1", mode=PUBLIC_MODE)
    write_atomic(target, b"v2", mode=PUBLIC_MODE)
    assert target.read_bytes() == b"v2" and _mode(target) == PUBLIC_MODE
    assert [p.name for p in target.parent.iterdir()] == ["ca.crt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "ledger.json"
    write_atomic(target, b"old")
    with pytest.raises(TypeError, match="a bytes-like object is required, not 'str'"):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ledger.json"]
