"""install.sh end to end (offline wheelhouse, real venv, real bundle, real mosquitto with mutual TLS) and
`fedlora diag` on this machine against a provisioned node, a tiny bundle and its gateway's broker."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardware_tests import diag_cli
from hardware_tests.runner import CHECK_NAMES

try:
    from tests.integration.diag_fleet import Fleet, start_fleet, write_device_config
    from tests.integration.mosquitto_fixture import free_port
except ModuleNotFoundError:  # plain `pytest`: tests/integration itself is on sys.path
    from diag_fleet import Fleet, start_fleet, write_device_config  # type: ignore[no-redef]
    from mosquitto_fixture import free_port  # type: ignore[no-redef]

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SH = ROOT / "install.sh"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    handle = start_fleet(tmp_path_factory.mktemp("fleet"))
    yield handle
    handle.broker.stop()


@pytest.fixture(scope="module")
def bundle(tiny_llama_bundle: Path) -> Path:
    """The session's tiny-llama bundle (tests/conftest.py)."""
    return tiny_llama_bundle


def _checks(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def test_diag_json_passes_on_this_machine(fleet: Fleet, bundle: Path, tmp_path: Path) -> None:
    config = write_device_config(fleet.node_dir, bundle, tmp_path)
    out = tmp_path / "diag.json"
    assert diag_cli.main(["--config", str(config), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    checks = _checks(report)
    assert list(checks) == list(CHECK_NAMES)
    assert report["verdict"] in ("pass", "warn")
    assert not [c for c in checks.values() if c["status"] == "fail"]
    assert checks["broker"]["status"] == "pass" and checks["broker"]["details"]["tls"] is True
    assert checks["trainer"]["details"]["backend"] == "ort"
    assert "CPUExecutionProvider" in checks["trainer"]["details"]["providers"]
    bench = checks["benchmark"]["details"]
    assert bench["parity"].startswith("exact") and abs(bench["eval_loss"] - bench["reference"]) <= 1e-4
    assert bench["steps_per_s"] > 0
    assert checks["bundle"]["status"] == "pass" and checks["clock"]["status"] == "pass"
    assert checks["jetson"]["status"] == "skip" and "not a Jetson" in checks["jetson"]["reason"]


def test_diag_fails_when_the_broker_refuses_the_client(fleet: Fleet, bundle: Path, tmp_path: Path) -> None:
    """A node key that does not match its certificate: TLS fails, the check fails, exit code 1."""
    node = tmp_path / "node"
    shutil.copytree(fleet.node_dir, node)
    other = fleet.fleet_dir / "brokers" / "g1" / "server.key"  # a real key, not the node's
    (node / "node.key").write_bytes(other.read_bytes())
    config = write_device_config(node, bundle, tmp_path)
    out = tmp_path / "diag.json"
    assert diag_cli.main(["--config", str(config), "--json", str(out), "--only", "broker,bundle"]) == 1
    checks = _checks(json.loads(out.read_text()))
    assert checks["broker"]["status"] == "fail" and checks["bundle"]["status"] == "pass"


def test_field_suite_runs_under_pytest(fleet: Fleet, bundle: Path, tmp_path: Path) -> None:
    config = write_device_config(fleet.node_dir, bundle, tmp_path)
    env = {**os.environ, "FEDLORA_DEVICE_CONFIG": str(config)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(ROOT / "hardware_tests" / "test_field.py"),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(CHECK_NAMES) - 4} passed" in proc.stdout  # jetson, thermal, cpu_governor, ledger skip here


def _tree(root: Path) -> dict[str, tuple[str, str]]:
    """Every path under `root`: (mode, sha256 or link target or 'dir')."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            what = "-> " + os.readlink(path)
        elif stat.S_ISDIR(st.st_mode):
            what = "dir"
        else:
            what = hashlib.sha256(path.read_bytes()).hexdigest()
        out[str(path.relative_to(root))] = (oct(st.st_mode & 0o7777), what)
    return out


def _install(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL_SH), *args], capture_output=True, text=True, timeout=400, env=env
    )


def test_install_twice_is_identical_then_uninstall(
    fleet: Fleet, bundle: Path, wheelhouse: Path, tmp_path: Path
) -> None:
    prefix = tmp_path / "opt"
    data = tmp_path / "mydata"  # supplied by the operator: its mode stays as it is
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    args = (
        "--prefix",
        str(prefix),
        "--wheelhouse",
        str(wheelhouse),
        "--data-dir",
        str(data),
        "--node",
        str(fleet.node_dir),
        "--bundle",
        str(bundle),
    )
    first = _install(*args)  # no systemd runs here: no user, no unit, and it says how to start
    assert first.returncode == 0, first.stdout + first.stderr
    assert "verdict: PASS" in first.stdout or "verdict: WARN" in first.stdout
    assert "broker: reachable" in first.stdout
    start_line = f"{prefix}/venv/bin/fedlora device --config {prefix}/etc/device.toml"
    assert "systemd is not running here: no service user, no unit" in first.stdout
    assert start_line in first.stdout
    assert oct(data.stat().st_mode & 0o777) == "0o755"
    before = _tree(prefix)
    second = _install(*args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "wrote" not in second.stdout  # nothing rewritten
    assert _tree(prefix) == before
    for key in ("node.key", "signing.key", "device.toml"):
        assert before[f"etc/{key}"][0] == "0o600"
    assert before["etc"][0] == "0o700" and before["state"][0] == "0o700"
    device_toml = (prefix / "etc" / "device.toml").read_text()
    assert f'bundle_dir = "{prefix}/bundle"' in device_toml and f'data_dir = "{data}"' in device_toml
    _broker_down_is_a_separate_verdict(fleet, args, tmp_path)
    (prefix / "state" / "ledger.json").write_text("{}")  # stands for the privacy ledger

    removed = _install("--prefix", str(prefix), "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert sorted(p.name for p in prefix.iterdir()) == [".install", "state"]
    assert (prefix / "state" / "ledger.json").exists() and data.is_dir()
    purged = _install("--prefix", str(prefix), "--uninstall", "--purge")  # knows the custom data dir
    assert purged.returncode == 0, purged.stderr
    assert not prefix.exists() and not data.exists()


def _broker_down_is_a_separate_verdict(fleet: Fleet, args: tuple[str, ...], tmp_path: Path) -> None:
    """Installing succeeds when the gateway broker is not up yet; the broker verdict says so."""
    node = tmp_path / "node-dead-broker"
    shutil.copytree(fleet.node_dir, node)
    config = (node / "config.toml").read_text()
    port = next(line for line in config.splitlines() if line.startswith("port = "))
    (node / "config.toml").write_text(config.replace(port, f"port = {free_port()}"))
    dead = list(args)
    dead[dead.index(str(fleet.node_dir))] = str(node)
    result = _install(*dead)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "installed: " in result.stdout
    assert "broker: NOT reachable yet" in result.stdout
    restored = _install(*args)
    assert restored.returncode == 0 and "broker: reachable" in restored.stdout, restored.stdout


def test_without_a_fedlora_source_it_refuses_and_leaves_nothing(
    fleet: Fleet, bundle: Path, tmp_path: Path
) -> None:
    prefix = tmp_path / "opt"
    result = _install("--prefix", str(prefix), "--node", str(fleet.node_dir), "--bundle", str(bundle))
    assert result.returncode == 1
    assert "give exactly one of --wheelhouse DIR, --wheel FILE or --source DIR" in result.stderr
    assert "not installed from a package index" in result.stderr
    assert not prefix.exists()
    empty = tmp_path / "wheels"
    empty.mkdir()
    result = _install(
        "--prefix",
        str(prefix),
        "--wheelhouse",
        str(empty),
        "--node",
        str(fleet.node_dir),
        "--bundle",
        str(bundle),
    )
    assert result.returncode == 1 and "no fedlora-*.whl in --wheelhouse" in result.stderr
    assert not prefix.exists()


def test_a_failed_pip_install_removes_what_the_run_created(
    fleet: Fleet, bundle: Path, wheelhouse: Path, tmp_path: Path
) -> None:
    """A wheelhouse holding fedlora but not its dependencies: pip fails offline; nothing is left."""
    partial = tmp_path / "wheels"
    partial.mkdir()
    for wheel in wheelhouse.glob("fedlora-*.whl"):
        shutil.copy(wheel, partial)
    prefix = tmp_path / "opt"
    result = _install(
        "--prefix",
        str(prefix),
        "--wheelhouse",
        str(partial),
        "--node",
        str(fleet.node_dir),
        "--bundle",
        str(bundle),
    )
    assert result.returncode == 1, result.stdout
    assert "pip could not install" in result.stderr and "every dependency in the wheelhouse" in result.stderr
    assert "removed what this run had created" in result.stderr
    assert not prefix.exists()


def _unit_text(tmp_path: Path, prefix: str, data_dir: str) -> str:
    """The unit setup_systemd writes for PREFIX and DATA_DIR (functions sourced, nothing installed)."""
    script = f"""
set -euo pipefail
source {INSTALL_SH}
PREFIX={prefix}; DATA_DIR={data_dir}; DATA_DIR_OWNED=0; JETSON_MODEL=""; UNIT_DIR={tmp_path}
act() {{ :; }}
getent() {{ return 0; }}
install_file() {{ cat "$1"; }}
make_dir() {{ :; }}
setup_systemd
"""
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_unit_does_not_hide_data_under_home_or_tmp(tmp_path: Path) -> None:
    plain = _unit_text(tmp_path, "/opt/fedlora", "/srv/data")
    assert "\nProtectHome=true\n" in plain and "\nPrivateTmp=true\n" in plain
    home = _unit_text(tmp_path, "/opt/fedlora", "/home/pi/data")
    assert "\nProtectHome=true" not in home and "\nPrivateTmp=true\n" in home
    tmp = _unit_text(tmp_path, "/opt/fedlora", "/tmp/fl-data")
    assert "\nPrivateTmp=true" not in tmp and "\nProtectHome=true\n" in tmp
    assert "kept as it is" in home  # a supplied data directory is not chown-ed


def test_dry_run_on_a_jetson_without_ort_wheel_falls_back_to_torch(
    fleet: Fleet, bundle: Path, tmp_path: Path
) -> None:
    etc, proc = tmp_path / "etc", tmp_path / "proc"
    (proc / "device-tree").mkdir(parents=True)
    etc.mkdir()
    (etc / "os-release").write_text('PRETTY_NAME="Ubuntu 20.04.6 LTS"\n')
    (etc / "nv_tegra_release").write_text("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref\n")
    (proc / "device-tree" / "model").write_bytes(b"NVIDIA Jetson Xavier NX Developer Kit\0")
    wheel = tmp_path / "fedlora-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")  # a dry run installs nothing
    env = {
        **os.environ,
        "FEDLORA_INSTALL_ARCH": "aarch64",
        "FEDLORA_INSTALL_ETC": str(etc),
        "FEDLORA_INSTALL_PROC": str(proc),
    }
    prefix = tmp_path / "opt"
    result = _install(
        "--prefix",
        str(prefix),
        "--dry-run",
        "--systemd",
        "--wheel",
        str(wheel),
        "--unit-dir",
        str(tmp_path / "units"),
        "--node",
        str(fleet.node_dir),
        "--bundle",
        str(bundle),
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Jetson Xavier NX" in out and "L4T R35.4.1" in out
    assert "torch fallback" in out and f"{wheel}[device-torch]" in out
    assert "useradd --system" in out and "diag --config" in out
    assert not prefix.exists() and not (tmp_path / "units").exists()


def test_install_sh_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (apt-get install -y shellcheck)")
    proc = subprocess.run([shellcheck, str(INSTALL_SH)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
