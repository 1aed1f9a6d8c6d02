"""`fedlora demo`: provision a fleet, start broker + cloud + gateways + device processes, run the rounds
with injected dropouts and live progress, then evaluate and write report.json, loss.png and the adapter."""

from __future__ import annotations

import json
import os
import queue
import random
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedlora.demo.configs import (
    DEFAULT_TIMEOUTS_S,
    EMBEDDED_BROKER_MQTT_VERSION,
    DemoSettings,
    cloud_config,
    device_config,
    gateway_config,
)
from fedlora.demo.monitor import BusEvent, BusObserver
from fedlora.demo.presets import preset_for
from fedlora.demo.processes import NodeProcess
from fedlora.demo.workspace import BundleSpec, default_cache_dir, ensure_bundle, prepare_data
from fl_protocol.config import load_fleet_keys
from fl_protocol.errors import EXIT_ROLE_FAULT, ConfigError, FedloraError

Progress = Callable[[str], None]
FLEET = "demo"
MAX_RESTARTS = 3  # per node: a role that exits on a fault is restarted from its durable state this often


@dataclass(frozen=True)
class DemoOptions:
    """Command-line options of `fedlora demo`."""

    devices: int = 8
    gateways: int = 2
    rounds: int = 5
    dropout: float = 0.25
    broker: str = "auto"
    model: str = "tiny-llama"  # the command line defaults to presets.DEFAULT_MODEL
    http_port: int | None = None  # status page on 127.0.0.1 (None: a free port; 0: none)
    out_dir: Path = Path("fedlora-out")
    report: Path | None = None
    seed: int = 0
    cache_dir: Path = field(default_factory=default_cache_dir)
    settings_overrides: dict[str, Any] = field(default_factory=dict)
    verbose: bool = False  # INFO-level logs from every node into work/logs
    test_hooks_dir: Path | None = None  # tests only: devices and gateways write plain updates and sums here

    def __post_init__(self) -> None:
        if self.gateways < 1 or self.devices < 2 * self.gateways:
            raise ConfigError("need at least one gateway and two devices per gateway")
        if not 0.0 <= self.dropout < 0.5:
            raise ConfigError(f"--dropout must be in [0, 0.5), got {self.dropout}")
        if self.rounds < 1:
            raise ConfigError("--rounds must be at least 1")


LOCAL_BROKERS = {"auto": "auto", "embedded": "amqtt", "amqtt": "amqtt", "mosquitto": "mosquitto"}


def parse_broker(spec: str) -> tuple[str, int] | None:
    """None for a local broker the demo starts ('auto', 'embedded', 'mosquitto'), else (host, port)."""
    if spec in LOCAL_BROKERS:
        return None
    if not spec.startswith("mqtt://") or ":" not in spec[7:]:
        raise ConfigError(
            f"--broker must be 'auto', 'embedded', 'mosquitto' or mqtt://HOST:PORT, got {spec!r}"
        )
    host, _, port = spec[7:].rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--broker port must be 1..65535, got {port!r}")
    return host, int(port)


@dataclass
class _Federation:
    cloud: NodeProcess
    gateways: list[NodeProcess]
    devices: list[NodeProcess]
    store_dir: Path
    fleet_keys_file: Path

    @property
    def all(self) -> list[NodeProcess]:
        return [*self.devices, *self.gateways, self.cloud]


def _provision(work: Path, options: DemoOptions) -> tuple[list[str], dict[str, str]]:
    from fedlora.provision.fleet import FleetSettings
    from fedlora.provision.provisioner import create_fleet

    gateways = [f"g{i + 1}" for i in range(options.gateways)]
    settings = FleetSettings(
        fleet=FLEET,
        cloud_name="cloud",
        cloud_host="127.0.0.1",
        cloud_port=8883,
        gateway_port=8883,
        gateway_hosts={},
        valid_days=30,
        max_packet_bytes=64 * 1024 * 1024,
        broker_root=str(work / "fleet" / "brokers"),
    )
    fleet = create_fleet(
        work / "fleet", settings, gateways, device_count=options.devices, progress=lambda _m: None
    )
    device_gateway = {d.id: str(d.gateway) for d in fleet.active("device")}
    return gateways, device_gateway


def _write_configs(
    work: Path,
    options: DemoOptions,
    broker: tuple[str, int],
    bundle: Path,
    data_dirs: list[Path],
    settings: DemoSettings,
    device_gateway: dict[str, str],
    http_port: int,
) -> _Federation:
    nodes = work / "fleet" / "nodes"
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    gateways = list(settings.gateways)
    mqtt_version = EMBEDDED_BROKER_MQTT_VERSION if parse_broker(options.broker) is None else None
    store_dir = work / "cloud-store"
    cloud_file = nodes / "cloud" / "cloud.toml"
    cloud_file.write_text(
        cloud_config(
            nodes / "cloud",
            fleet=FLEET,
            broker=broker,
            bundle_dir=bundle,
            store_dir=store_dir,
            settings=settings,
            http_port=http_port,
            mqtt_version=mqtt_version,
        )
    )
    cloud = NodeProcess("cloud", "cloud", cloud_file, logs / "cloud.log", verbose=options.verbose)
    gw_procs = []
    for gw in gateways:
        path = nodes / gw / "gateway.toml"
        path.write_text(
            gateway_config(
                nodes / gw,
                gw,
                fleet=FLEET,
                broker=broker,
                state_db=work / f"{gw}-state.sqlite3",
                min_cohort=settings.min_survivors,
                hooks_dir=options.test_hooks_dir,
                mqtt_version=mqtt_version,
                keepalive_s=settings.keepalive_s,
            )
        )
        gw_procs.append(
            NodeProcess(
                gw,
                "gateway",
                path,
                logs / f"{gw}.log",
                verbose=options.verbose,
                test_hooks=options.test_hooks_dir is not None,
            )
        )
    dev_procs = []
    for index, (dev, gw) in enumerate(sorted(device_gateway.items())):
        path = nodes / dev / "device.toml"
        path.write_text(
            device_config(
                nodes / dev,
                dev,
                gw,
                fleet=FLEET,
                broker=broker,
                bundle_dir=bundle,
                data_dir=data_dirs[index],
                state_dir=work / "device-state" / dev,
                tier=settings.tier,
                data_seed=options.seed + index,
                hooks_dir=options.test_hooks_dir,
                mqtt_version=mqtt_version,
                keepalive_s=settings.keepalive_s,
            )
        )
        dev_procs.append(
            NodeProcess(
                dev,
                "device",
                path,
                logs / f"{dev}.log",
                verbose=options.verbose,
                test_hooks=options.test_hooks_dir is not None,
            )
        )
    return _Federation(cloud, gw_procs, dev_procs, store_dir, nodes / "cloud" / "fleet_keys.json")


def _wait_online(
    observer: BusObserver, nodes: list[str], progress: Progress, timeout_s: float = 120.0
) -> None:
    """Block until every node published a status (it is connected and subscribed), or time runs out.

    The cloud starts only then: a device still loading ONNX Runtime when the first task goes out would
    advertise after the gateway closed the cohort and sit round 1 out.
    """
    waiting = set(nodes)
    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        try:
            event = observer.events.get(timeout=0.5)
        except queue.Empty:
            continue
        if event.kind == "status" and event.state not in ("offline",):
            waiting.discard(event.node)
    if waiting:
        progress(f"  still not online after {timeout_s:.0f} s: {', '.join(sorted(waiting))}; starting anyway")
    else:
        progress(f"  all {len(nodes)} gateways and devices online; starting the cloud")


def _round_records(store_dir: Path) -> list[dict[str, Any]]:
    db = store_dir / "store.sqlite"
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [json.loads(r[0]) for r in conn.execute("SELECT record FROM rounds ORDER BY round")]


class _Driver:
    """Runs the federation to the end, killing devices at random points and printing progress."""

    def __init__(
        self, fed: _Federation, options: DemoOptions, observer: BusObserver, progress: Progress
    ) -> None:
        self.fed, self.options, self.observer, self.progress = fed, options, observer, progress
        self.rng = random.Random(options.seed)
        self.preset = preset_for(options.model)
        self.kill_at: dict[str, float] = {}
        self.to_restart: list[NodeProcess] = []
        self.restart_at: dict[str, float] = {}  # presets with restart_after_s: node id -> when
        self.seen_rounds: set[int] = set()
        self.reported: set[int] = set()
        self.round_started: dict[int, float] = {}
        self.alive_at_task: dict[int, int] = {}  # round id -> device processes running when its task went out
        self.restarts: dict[str, int] = {}

    def run(self, deadline: float) -> int:
        while time.monotonic() < deadline:
            self._supervise()
            if not self.fed.cloud.running:
                break
            try:
                self._on_event(self.observer.events.get(timeout=0.2))
            except queue.Empty:
                pass
            self._kill_due()
        if self.fed.cloud.running:
            self.progress("demo: time limit reached; stopping the federation")
            return 1
        self._report_new_rounds()
        return self.fed.cloud.returncode or 0

    def _supervise(self) -> None:
        """Restart, at most MAX_RESTARTS times each, a node that exited on its own with a non-zero code: any
        gateway or device, and the cloud on a role fault (its exit code 1 means "rounds failed": final)."""
        for proc in self.fed.all:
            code = proc.returncode
            if (
                code in (None, 0)
                or proc in self.to_restart
                or self.restarts.get(proc.node_id, 0) >= MAX_RESTARTS
            ):
                continue
            if proc is self.fed.cloud and code != EXIT_ROLE_FAULT:
                continue
            self.restarts[proc.node_id] = self.restarts.get(proc.node_id, 0) + 1
            self.progress(
                f"{proc.node_id} exited with code {code}; restarting it from its durable state "
                f"({self.restarts[proc.node_id]}/{MAX_RESTARTS})"
            )
            proc.start()

    def _on_event(self, event: BusEvent) -> None:
        if event.kind == "task" and event.round_id not in self.seen_rounds:
            self._report_new_rounds()  # the previous round's line first
            self.seen_rounds.add(event.round_id)
            self.round_started[event.round_id] = time.monotonic()
            self._restart_dropped()
            self.alive_at_task[event.round_id] = sum(p.running for p in self.fed.devices)
            self._schedule_dropouts(event.round_id)
        elif event.kind == "status" and event.node == "cloud":
            self._report_new_rounds()
        elif event.kind == "status" and event.state == "skipped":
            self.progress(
                f"  {event.node} sits round {event.details.get('round', '?') if event.details else '?'} "
                f"out: {event.reason}"
            )

    def _schedule_dropouts(self, round_id: int) -> None:
        count = int(round(self.options.dropout * len(self.fed.devices)))
        victims = self.rng.sample(self.fed.devices, count) if count else []
        now = time.monotonic()
        for proc in victims:
            self.kill_at[proc.node_id] = now + self.rng.uniform(*self.preset.kill_window_s)
        names = ", ".join(sorted(p.node_id for p in victims)) or "none"
        self.progress(f"round {round_id}: task out; {len(self.fed.devices)} devices, dropping {names}")

    def _kill_due(self) -> None:
        now = time.monotonic()
        for proc in self.fed.devices:
            due = self.kill_at.get(proc.node_id)
            if due is not None and now >= due:
                del self.kill_at[proc.node_id]
                proc.kill()
                self.to_restart.append(proc)
                if self.preset.restart_after_s is not None:
                    self.restart_at[proc.node_id] = now + self.preset.restart_after_s
        for proc in list(self.to_restart):
            due = self.restart_at.get(proc.node_id)
            if due is not None and now >= due:
                del self.restart_at[proc.node_id]
                proc.start()  # back before the next task: a real model takes a while to load
                self.to_restart.remove(proc)

    def _restart_dropped(self) -> None:
        for proc in self.to_restart:
            proc.start()
            self.restart_at.pop(proc.node_id, None)
        self.to_restart.clear()

    def _report_new_rounds(self) -> None:
        for record in _round_records(self.fed.store_dir):
            if record["round"] in self.reported or record.get("state") == "running":
                continue
            self.reported.add(record["round"])
            self.progress(_round_line(record, self.alive_at_task.get(record["round"])))


def _round_line(r: dict[str, Any], selected: int | None = None) -> str:
    if r.get("state") != "completed":
        return f"round {r['round']}: {r.get('state')} (will be retried from model v{r.get('model_version')})"
    loss = "n/a" if r.get("train_loss") is None else f"{r['train_loss']:.3f}"
    eps = "inf" if r.get("epsilon") is None else f"{r['epsilon']:.2f}"
    return (
        f"round {r['round']}: done in {r['seconds']:.1f} s, "
        f"{r['survivors']}/{selected or r['selected']} devices "
        f"survived, train loss {loss}, epsilon {eps} (delta {r['delta']:g}), uplink "
        f"{r['uplink_bytes_per_device']} B/device vs {r['dense_fp32_bytes']} B dense fp32"
    )


def _status_port(options: DemoOptions) -> int:
    if options.http_port is not None:
        return options.http_port
    from fedlora.embedded_broker import _free_port

    return _free_port("127.0.0.1")


def load_factor() -> float:
    """How oversubscribed this machine is: 1-minute load average per core, clamped to [1, 8]."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return 1.0
    return min(8.0, max(1.0, load / (os.cpu_count() or 1)))


def _settings(options: DemoOptions, gateways: list[str], progress: Progress) -> DemoSettings:
    preset = preset_for(options.model)
    values = {**preset.settings, **options.settings_overrides}
    factor = load_factor()
    if preset.scale_timeouts_with_load and factor > 1.0 and "stage_timeouts_s" in preset.settings:
        # A real model on a busy box: every stage takes longer; scale the deadlines, not the work.
        values["stage_timeouts_s"] = {k: v * factor for k, v in values["stage_timeouts_s"].items()}
        progress(f"  machine load {factor:.1f}x its cores: stage deadlines scaled by {factor:.1f}")
    return DemoSettings(
        rounds=options.rounds, gateways=tuple(gateways), total_devices=options.devices, **values
    )


def run_demo(options: DemoOptions, progress: Progress = print) -> int:
    """Run the whole demo; returns the exit code (0 only if every round completed)."""
    from fedlora.demo.finish import finish_demo  # torch-free until evaluation

    out = options.out_dir.expanduser().resolve()
    work = out / "work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    preset = preset_for(options.model)
    progress(f"[1/6] model bundle: {options.model}")
    spec = BundleSpec(model=options.model, seq_len=preset.seq_len, seed=options.seed)
    bundle = ensure_bundle(spec, options.cache_dir, progress)
    progress(f"[2/6] corpus: stdlib docstrings, {options.devices} non-IID shards")
    data = prepare_data(work / "data", num_devices=options.devices, seed=options.seed)
    progress(
        f"[3/6] fleet '{FLEET}': cloud, {options.gateways} gateway(s), {options.devices} devices "
        "(keys, certs)"
    )
    gateways, device_gateway = _provision(work, options)
    settings = _settings(options, gateways, progress)
    broker_addr = parse_broker(options.broker)
    local = None
    if broker_addr is None:
        from fedlora.embedded_broker import start_local_broker

        local = start_local_broker(work / "broker", prefer=LOCAL_BROKERS[options.broker])
        broker_addr = (local.host, local.port)
    progress(
        f"[4/6] starting nodes on broker {broker_addr[0]}:{broker_addr[1]}"
        f"{f' (local {local.kind})' if local else ''}; logs in {work / 'logs'}"
    )
    http_port = _status_port(options)
    fed = _write_configs(
        work, options, broker_addr, bundle, data.device_dirs, settings, device_gateway, http_port
    )
    observer = BusObserver(
        FLEET,
        load_fleet_keys(fed.fleet_keys_file),
        broker_addr,
        mqtt_version=EMBEDDED_BROKER_MQTT_VERSION if local is not None else "5",
    )
    started = time.monotonic()
    code = 1
    driver = _Driver(fed, options, observer, progress)
    try:
        observer.start()
        for proc in [*fed.gateways, *fed.devices]:
            proc.start()
        _wait_online(
            observer,
            [p.node_id for p in [*fed.gateways, *fed.devices]],
            progress,
            timeout_s=preset.online_timeout_s,
        )
        fed.cloud.start()
        if http_port:
            progress(f"status page: http://127.0.0.1:{http_port}/ (live while the federation runs)")
        per_round_s = sum((settings.stage_timeouts_s or DEFAULT_TIMEOUTS_S).values()) + 30
        code = driver.run(started + options.rounds * 3 * per_round_s + 120)
    finally:
        for proc in fed.all:
            proc.stop()
        observer.stop()
        if local is not None:
            local.stop()
    progress(f"federation finished in {time.monotonic() - started:.1f} s (cloud exit code {code})")
    if code != 0:
        progress(f"cloud log tail:\n{fed.cloud.log_tail()}")
    return finish_demo(
        options=options,
        out=out,
        bundle=bundle,
        store_dir=fed.store_dir,
        data=data,
        settings=settings,
        code=code,
        progress=progress,
        alive_at_task=driver.alive_at_task,
        preset=preset,
        config={
            **asdict(settings),
            "model": options.model,
            "bundle_dir": str(bundle),
            "devices": options.devices,
            "dropout": options.dropout,
            "broker": options.broker if local is None else f"{options.broker} ({local.kind})",
            "seed": options.seed,
            "seq_len": preset.seq_len,
            "status_page_port": http_port or None,
        },
    )


__all__ = ["DemoOptions", "FedloraError", "parse_broker", "run_demo"]
