"""The Ray executor of `fedlora simulate` (issue 10, item 7; docs/simulate.md, "Executors").

Default suite (ray not needed): the one-line error when ray is missing, the ray_* settings, and how a
worker finds or receives the bundle. Slow (`pytest -m slow`, skipped without ray): tiny-llama on a local
Ray instance of 2 CPUs gives the same report.json as the default executor for the same seed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from fedlora.cli import main
from fedlora.simulate.config import SimConfig
from fedlora.simulate.ray_executor import RayExecutor, bundle_files, check_reachable, worker_bundle_dir
from fedlora.simulate.report import CLOCK_KEYS
from fl_protocol.errors import ConfigError, FedloraError
from fl_protocol.manifest import load_manifest, write_manifest

# --- without ray --------------------------------------------------------------------------------


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import ray` fails and ray's spec is not found, as on a machine without the extra."""
    monkeypatch.setitem(sys.modules, "ray", None)  # type: ignore[arg-type]


@pytest.mark.usefixtures("no_ray")
def test_missing_ray_is_a_one_line_error_with_the_install_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    code = main(["simulate", "--executor", "ray", "--cache-dir", str(cache), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert "needs the ray package" in err and "pip install 'fedlora[ray]'" in err
    assert not cache.exists() and not (tmp_path / "out").exists()  # refused before any export or output


@pytest.mark.usefixtures("no_ray")
def test_ray_executor_without_ray_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs the ray package .*pip install"):
        RayExecutor(tmp_path, [tmp_path], [], 3)


def test_default_executor_needs_no_ray(no_ray: None) -> None:
    SimConfig.load(None, {"simulate": {"devices": 6}}).check_static()


def test_ray_settings_parse_and_belong_to_the_ray_executor(tmp_path: Path) -> None:
    path = tmp_path / "sim.toml"
    path.write_text('[simulate]\nexecutor = "ray"\nray_address = "auto"\nray_workers = 4\n')
    s = SimConfig.load(path).simulate
    assert (s.executor, s.ray_address, s.ray_workers) == ("ray", "auto", 4)
    with pytest.raises(ConfigError, match="apply to executor 'ray' only"):
        SimConfig.load(None, {"simulate": {"ray_address": "auto"}})
    with pytest.raises(ConfigError, match="ray_workers must be >= 0"):
        SimConfig.load(None, {"simulate": {"executor": "ray", "ray_workers": -1}})
    with pytest.raises(ConfigError, match="ray_address must be 'auto' or HOST:PORT"):
        SimConfig.load(None, {"simulate": {"executor": "ray", "ray_address": "head-node"}})
    assert SimConfig.load(None, {"simulate": {"executor": "ray", "ray_address": "10.0.0.5:6379"}})


def test_an_address_where_nothing_listens_fails_fast_and_a_listening_one_passes() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"127.0.0.1:{server.getsockname()[1]}")
        check_reachable("auto")
    port = _closed_port()
    with pytest.raises(FedloraError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        check_reachable(f"127.0.0.1:{port}", timeout_s=5.0)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again on leaving: nothing listens there


# --- the bundle on a worker's node ---------------------------------------------------------------


def _bundle(root: Path, payload: bytes, *, seq_len: int = 64) -> str:
    """A minimal verified bundle (manifest + one nested file); returns its bundle id."""
    (root / "model").mkdir(parents=True)
    (root / "model" / "weights.bin").write_bytes(payload)
    raw: dict[str, Any] = {
        "format_version": 1,
        "seq_len": seq_len,
        "files": {"model/weights.bin": hashlib.sha256(payload).hexdigest()},
    }
    return write_manifest(root, raw).bundle_id


def _never() -> dict[str, bytes]:
    raise AssertionError("the bundle is on this node: nothing must be fetched")


def test_worker_uses_the_bundle_at_the_drivers_path_when_it_is_the_same(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle_id = _bundle(bundle, b"w" * 100)
    assert worker_bundle_dir(bundle, bundle_id, _never, tmp_path / "scratch") == bundle


def test_worker_writes_the_shipped_bundle_when_its_node_lacks_it(tmp_path: Path) -> None:
    bundle_id = _bundle(tmp_path / "driver", b"w" * 100)
    files = bundle_files(tmp_path / "driver")
    assert set(files) == {"manifest.json", "model/weights.bin"}
    _bundle(tmp_path / "other", b"x" * 100, seq_len=128)  # another bundle at the same path on this node
    for path in (tmp_path / "missing", tmp_path / "other"):
        got = worker_bundle_dir(path, bundle_id, lambda: files, tmp_path / f"scratch-{path.name}")
        assert got != path and load_manifest(got, verify=True).bundle_id == bundle_id


def test_worker_refuses_a_missing_unshipped_bundle_and_escaping_names(tmp_path: Path) -> None:
    with pytest.raises(FedloraError, match="is not on this Ray node"):
        worker_bundle_dir(tmp_path / "missing", "0" * 64, None, tmp_path / "scratch")
    with pytest.raises(FedloraError, match="leaves the bundle directory"):
        worker_bundle_dir(tmp_path / "missing", "0" * 64, lambda: {"../evil": b""}, tmp_path / "scratch")
    assert not (tmp_path / "scratch" / "evil").exists()


# --- with ray: the same report as the default executor --------------------------------------------

# Not pytest.importorskip: importing ray in the test process would change the stdlib corpus the
# default executor's run builds (docs/simulate.md, "Limits").
HAS_RAY = importlib.util.find_spec("ray") is not None
FLAGS = (
    "--devices 6 --gateways 2 --rounds 2 --dropout 0.3 --fleet-mix ideal --step-s 0.5 --seed 7 "
    "--local-steps 2 --mechanism skellam --noise-multiplier 0.5 --quant-bits 8 --ring-bits 28"
).split()


def _timeless(report: dict[str, Any]) -> dict[str, Any]:
    """rounds[] and final without the clock readings."""
    rows = [{k: v for k, v in row.items() if k not in CLOCK_KEYS} for row in report["rounds"]]
    return {"rounds": rows, "final": report["final"]}


@pytest.mark.slow
@pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install 'fedlora[ray]')")
def test_ray_executor_reproduces_the_default_executors_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedlora.demo.workspace import BundleSpec, ensure_bundle

    bundle = ensure_bundle(BundleSpec(), tmp_path / "cache", lambda _line: None)
    reports = {}
    for executor in ("local", "ray"):  # local first: the ray run imports ray into this process
        extra = ["--ray-workers", "2"] if executor == "ray" else []  # a local Ray instance of 2 CPUs
        out = tmp_path / executor
        args = [*FLAGS, "--bundle", str(bundle), "--executor", executor, *extra, "--out", str(out)]
        code = main(["simulate", *args])
        assert code == 0, capsys.readouterr().err
        reports[executor] = json.loads((out / "report.json").read_text())
    local, ray = reports["local"], reports["ray"]
    assert ray["config"]["simulate"]["executor"] == "ray"
    assert _timeless(ray) == _timeless(local)
    assert [r["survivors"] for r in ray["rounds"]] == [4, 4]
    assert ray["final"]["eval_loss"] != ray["final"]["initial_eval_loss"]  # the workers really trained
