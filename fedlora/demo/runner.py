"""`fedlora demo`: provision a fleet, start broker + cloud + gateways + device processes, run the rounds
with injected dropouts and live progress, then evaluate and write report.json, loss.png and the adapter.

The steps live in their own modules: options.py (the command line's options), federation.py (fleet, node
configs, processes), driver.py (the running federation), finish.py (evaluation and reports).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedlora.demo.configs import DEFAULT_TIMEOUTS_S, EMBEDDED_BROKER_MQTT_VERSION, DemoSettings
from fedlora.demo.driver import Driver, wait_online
from fedlora.demo.federation import FLEET, provision_fleet, write_configs
from fedlora.demo.machine_load import load_factor
from fedlora.demo.monitor import BusObserver
from fedlora.demo.options import LOCAL_BROKERS, DemoOptions, parse_broker
from fedlora.demo.presets import preset_for
from fedlora.demo.workspace import BundleSpec, DemoData, ensure_bundle, prepare_data
from fedlora.embedded_broker import LocalBroker, _free_port, start_local_broker
from fl_protocol.codec.settings import AUTO_RING_BITS, required_ring_bits
from fl_protocol.config import load_fleet_keys
from fl_protocol.errors import FedloraError

Progress = Callable[[str], None]


@dataclass(frozen=True)
class _Inputs:
    """What the federation needs before it starts (steps 1 to 3)."""

    out: Path
    work: Path
    bundle: Path
    data: DemoData
    settings: DemoSettings
    device_gateway: dict[str, str]


def _status_port(options: DemoOptions) -> int:
    if options.http_port is not None:
        return options.http_port
    return _free_port("127.0.0.1")


def _settings(options: DemoOptions, gateways: list[str], progress: Progress) -> DemoSettings:
    preset = preset_for(options.model)
    values = {**preset.settings, **options.settings_overrides}
    factor = load_factor()
    if preset.scale_timeouts_with_load and factor > 1.0 and "stage_timeouts_s" in preset.settings:
        # A real model on a busy box: every stage takes longer; scale the deadlines, not the work.
        values["stage_timeouts_s"] = {k: v * factor for k, v in values["stage_timeouts_s"].items()}
        progress(f"  machine load {factor:.1f}x its cores: stage deadlines scaled by {factor:.1f}")
    if values.get("ring_bits") == AUTO_RING_BITS:  # no DP noise here (the CLI sets a ring for DP)
        values["ring_bits"] = max(8, required_ring_bits(int(values["quant_bits"]), options.devices, 0))
    return DemoSettings(
        rounds=options.rounds, gateways=tuple(gateways), total_devices=options.devices, **values
    )


def _prepare(options: DemoOptions, progress: Progress) -> _Inputs:
    """Steps 1 to 3: a fresh work directory, the model bundle, the devices' data and the fleet."""
    out = options.out_dir.expanduser().resolve()
    work = out / "work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    preset = preset_for(options.model)
    progress(f"[1/6] model bundle: {options.model}")
    spec = BundleSpec(
        model=options.model,
        lora_alpha=preset.lora_alpha,
        seq_len=preset.seq_len,
        seed=options.seed,
        ffa=preset.ffa,
    )
    bundle = ensure_bundle(spec, options.cache_dir, progress)
    progress(f"[2/6] corpus: stdlib docstrings, {options.devices} non-IID shards")
    data = prepare_data(work / "data", num_devices=options.devices, seed=options.seed)
    progress(
        f"[3/6] fleet '{FLEET}': cloud, {options.gateways} gateway(s), {options.devices} devices "
        "(keys, certs)"
    )
    gateways, device_gateway = provision_fleet(work, options)
    settings = _settings(options, gateways, progress)
    return _Inputs(out, work, bundle, data, settings, device_gateway)


def _broker(work: Path, options: DemoOptions) -> tuple[tuple[str, int], LocalBroker | None]:
    """The broker's address, and the local broker started for the demo (None for an external one)."""
    address = parse_broker(options.broker)
    if address is not None:
        return address, None
    local = start_local_broker(work / "broker", prefer=LOCAL_BROKERS[options.broker])
    return (local.host, local.port), local


def _drive(driver: Driver, settings: DemoSettings, http_port: int, started: float) -> int:
    """Start gateways and devices, the cloud once they are online, and run the rounds; the cloud's code."""
    fed, progress = driver.fed, driver.progress
    driver.observer.start()
    for proc in [*fed.gateways, *fed.devices]:
        proc.start()
    wait_online(
        driver.observer,
        [p.node_id for p in [*fed.gateways, *fed.devices]],
        progress,
        timeout_s=driver.preset.online_timeout_s,
    )
    fed.cloud.start()
    if http_port:
        progress(f"status page: http://127.0.0.1:{http_port}/ (live while the federation runs)")
    per_round_s = sum((settings.stage_timeouts_s or DEFAULT_TIMEOUTS_S).values()) + 30
    return driver.run(started + driver.options.rounds * 3 * per_round_s + 120)


def _report_config(
    options: DemoOptions, inputs: _Inputs, local: LocalBroker | None, http_port: int
) -> dict[str, Any]:
    """The run's configuration as report.json records it."""
    return {
        **asdict(inputs.settings),
        "model": options.model,
        "bundle_dir": str(inputs.bundle),
        "devices": options.devices,
        "dropout": options.dropout,
        "broker": options.broker if local is None else f"{options.broker} ({local.kind})",
        "seed": options.seed,
        "seq_len": preset_for(options.model).seq_len,
        "status_page_port": http_port or None,
    }


def run_demo(options: DemoOptions, progress: Progress = print) -> int:
    """Run the whole demo; returns the exit code (0 only if every round completed)."""
    from fedlora.demo.finish import finish_demo  # torch-free until evaluation

    inputs = _prepare(options, progress)
    broker_addr, local = _broker(inputs.work, options)
    progress(
        f"[4/6] starting nodes on broker {broker_addr[0]}:{broker_addr[1]}"
        f"{f' (local {local.kind})' if local else ''}; logs in {inputs.work / 'logs'}"
    )
    http_port = _status_port(options)
    fed = write_configs(
        inputs.work,
        options,
        broker_addr,
        inputs.bundle,
        inputs.data.device_dirs,
        inputs.settings,
        inputs.device_gateway,
        http_port,
    )
    observer = BusObserver(
        FLEET,
        load_fleet_keys(fed.fleet_keys_file),
        broker_addr,
        mqtt_version=EMBEDDED_BROKER_MQTT_VERSION if local is not None else "5",
    )
    started = time.monotonic()
    driver = Driver(fed, options, observer, progress)
    try:
        code = _drive(driver, inputs.settings, http_port, started)
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
        out=inputs.out,
        bundle=inputs.bundle,
        store_dir=fed.store_dir,
        data=inputs.data,
        settings=inputs.settings,
        code=code,
        progress=progress,
        alive_at_task=driver.alive_at_task,
        preset=driver.preset,
        config=_report_config(options, inputs, local, http_port),
    )


__all__ = ["DemoOptions", "FedloraError", "parse_broker", "run_demo"]
