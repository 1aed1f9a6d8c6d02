"""Model store: versions, hash addressing, restart keeps history, tampering and bundle mix-ups refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aggregator_gateway.cloud.store import ModelStore, StoreError
from fl_protocol.codec.compress import vector_sha256
from fl_protocol.flatvec import load_flat_vector


def test_versions_hashes_and_restart(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, bundle_id="b" * 64)
    v0 = np.arange(5, dtype=np.float32)
    v1 = v0 + 0.5
    first = store.add(v0, parent=None, round_id=None, created_ms=1000)
    second = store.add(v1, parent=0, round_id=3, created_ms=2000)
    assert (first.version, second.version, second.parent, second.round) == (0, 1, 0, 3)
    assert second.sha256 == vector_sha256(v1).hex()
    assert second.path.name == f"{second.sha256}.safetensors"  # hash-addressed
    assert load_flat_vector(second.path, expected_bundle_id="b" * 64).model_version == 1
    store.save_round(3, {"round": 3, "state": "completed"})
    store.set_meta("accountant", "{}")
    store.close()

    reopened = ModelStore(tmp_path, bundle_id="b" * 64)
    assert [v.version for v in reopened.versions()] == [0, 1]
    assert reopened.latest() == second
    assert np.array_equal(reopened.load(1), v1)
    assert reopened.rounds() == [{"round": 3, "state": "completed"}]
    assert reopened.get_meta("accountant") == "{}"
    assert reopened.add(v1 + 1, parent=1, round_id=4, created_ms=3000).version == 2


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, bundle_id="b" * 64)
    info = store.add(np.ones(4, np.float32), parent=None, round_id=None, created_ms=0)
    data = bytearray(info.path.read_bytes())
    data[-1] ^= 0x01
    info.path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="sha256"):
        store.load(0)


def test_store_of_another_bundle_is_refused(tmp_path: Path) -> None:
    ModelStore(tmp_path, bundle_id="a" * 64).close()
    with pytest.raises(StoreError, match="belongs to bundle"):
        ModelStore(tmp_path, bundle_id="c" * 64)


def test_unknown_version(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="model version 7 is not in the store"):
        ModelStore(tmp_path, bundle_id="b" * 64).load(7)


def test_optimizer_state_belongs_to_one_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, bundle_id="b" * 64)
    assert store.optimizer_state(version=0) is None  # nothing saved yet
    moments = {"m": np.arange(3, dtype=np.float64), "v": np.full(3, 0.25)}
    store.save_optimizer_state(moments, version=4)
    assert sorted(p.name for p in tmp_path.glob("optimizer_*.npy")) == ["optimizer_m.npy", "optimizer_v.npy"]
    store.close()

    reopened = ModelStore(tmp_path, bundle_id="b" * 64)
    restored = reopened.optimizer_state(version=4)
    assert restored is not None and sorted(restored) == ["m", "v"]
    assert all(np.array_equal(restored[k], moments[k]) for k in moments)
    assert reopened.optimizer_state(version=3) is None  # moments of another version are not used
    reopened.save_optimizer_state({}, version=5)  # a stateless optimizer (FedAvg)
    assert reopened.optimizer_state(version=5) == {}


def test_downlink_state_belongs_to_one_version_and_survives_a_reopen(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, bundle_id="b" * 64)
    residual = np.linspace(-1e-3, 1e-3, 6)
    assert store.downlink_residual(version=0) is None and store.downlink_delta(version=0) is None
    store.save_downlink_state(residual, b"delta-body", version=3)
    store.close()
    reopened = ModelStore(tmp_path, bundle_id="b" * 64)
    assert reopened.downlink_residual(version=3).tobytes() == residual.tobytes()
    assert reopened.downlink_delta(version=3) == b"delta-body"
    assert reopened.downlink_residual(version=2) is None and reopened.downlink_delta(version=4) is None
    reopened.save_downlink_state(None, None, version=4)  # full models only: nothing kept for version 4
    assert reopened.downlink_residual(version=4) is None and reopened.downlink_delta(version=4) is None
    reopened.save_downlink_state(residual, None, version=5)
    (tmp_path / "downlink_residual.npy").unlink()  # a lost file reads as none (the cloud logs zeros)
    assert reopened.downlink_residual(version=5) is None
