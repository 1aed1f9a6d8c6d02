"""The demo's supervisor restarts a role that exits on its own with a non-zero code, with a bound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedlora.demo.driver import MAX_RESTARTS, Driver
from fedlora.demo.federation import Federation
from fedlora.demo.monitor import BusEvent
from fedlora.demo.options import DemoOptions
from fl_protocol.errors import EXIT_ROLE_FAULT


class _Proc:
    """A stand-in for NodeProcess: its exit code is set by the test; start() makes it run again."""

    def __init__(self, node_id: str, returncode: int | None = None) -> None:
        self.node_id, self.returncode, self.starts = node_id, returncode, 0

    @property
    def running(self) -> bool:
        return self.returncode is None

    def start(self) -> None:
        self.starts += 1
        self.returncode = None

    def kill(self) -> None:
        self.returncode = -9


def _driver(cloud: _Proc, gateway: _Proc, device: _Proc) -> tuple[Driver, list[str]]:
    fed: Any = Federation(cloud, [gateway], [device], Path("store"), Path("keys"))  # type: ignore[arg-type]
    lines: list[str] = []
    return Driver(fed, DemoOptions(devices=2, gateways=1), observer=None, progress=lines.append), lines  # type: ignore[arg-type]


def test_a_faulted_role_is_restarted_at_most_max_restarts_times() -> None:
    cloud, gateway, device = _Proc("cloud", EXIT_ROLE_FAULT), _Proc("g1", 1), _Proc("d1", 0)
    driver, lines = _driver(cloud, gateway, device)
    for _ in range(MAX_RESTARTS + 2):
        driver._supervise()
        cloud.returncode, gateway.returncode = EXIT_ROLE_FAULT, 70
    assert cloud.starts == gateway.starts == MAX_RESTARTS
    assert device.starts == 0  # a clean exit is not a fault
    assert "cloud exited with code 70; restarting it from its durable state (1/3)" in lines


def test_the_clouds_final_failure_and_injected_kills_are_not_restarted_here() -> None:
    cloud, gateway, device = _Proc("cloud", 1), _Proc("g1"), _Proc("d1", -9)
    driver, lines = _driver(cloud, gateway, device)
    driver.to_restart.append(device)  # killed by the demo's dropout injection: restarted at the next task
    driver._supervise()
    assert cloud.starts == gateway.starts == device.starts == 0 and lines == []
    assert driver.run(deadline=0.0) == 1  # the cloud exited with 1: rounds failed, the demo reports it


def test_the_real_model_demo_kills_its_victim_as_the_task_goes_out_for_the_whole_round() -> None:
    """Not a few seconds later: by then the victim has answered the roster, and the gateway would wait
    for its masked update until the masked deadline (307 s per round in the smollm2 demo). It comes back
    with the next task, not 5 s later, when it would still advertise in this round (no dropout)."""
    devices = [_Proc(f"d{i}") for i in range(4)]
    fed: Any = Federation(_Proc("cloud"), [_Proc("g1")], devices, Path("store"), Path("keys"))  # type: ignore[arg-type]
    options = DemoOptions(devices=4, gateways=1, dropout=0.25, model="smollm2-135m")
    driver = Driver(fed, options, observer=None, progress=lambda _line: None)  # type: ignore[arg-type]
    driver._on_event(BusEvent(kind="task", round_id=1))
    driver._kill_due()  # the same pass of the driver's loop, before it waits for the next bus event
    [victim] = [d for d in devices if not d.running]
    assert driver.alive_at_task[1] == 4
    driver._kill_due()
    assert not victim.running  # it sits the round out: not back in time to advertise
    driver._on_event(BusEvent(kind="task", round_id=2))
    assert victim.starts == 1  # restarted with the next task
