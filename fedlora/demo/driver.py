"""The running demo federation: wait for the nodes, inject the dropouts, restart faulted roles and print
one line per finished round."""

from __future__ import annotations

import json
import queue
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedlora.demo.federation import Federation
from fedlora.demo.monitor import BusEvent, BusObserver
from fedlora.demo.options import DemoOptions
from fedlora.demo.presets import preset_for
from fedlora.demo.processes import NodeProcess
from fl_protocol.errors import EXIT_ROLE_FAULT

Progress = Callable[[str], None]
MAX_RESTARTS = 3  # per node: a role that exits on a fault is restarted from its durable state this often


def wait_online(
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


def round_records(store_dir: Path) -> list[dict[str, Any]]:
    """The cloud's round records so far (read-only from its store; none before the store exists)."""
    db = store_dir / "store.sqlite"
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [json.loads(r[0]) for r in conn.execute("SELECT record FROM rounds ORDER BY round")]


class Driver:
    """Runs the federation to the end, killing devices at random points and printing progress."""

    def __init__(
        self, fed: Federation, options: DemoOptions, observer: BusObserver, progress: Progress
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
        """Supervise until the cloud exits or `deadline` (monotonic s): its exit code, 1 on the deadline."""
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
        for record in round_records(self.fed.store_dir):
            if record["round"] in self.reported or record.get("state") == "running":
                continue
            self.reported.add(record["round"])
            self.progress(round_line(record, self.alive_at_task.get(record["round"])))


def round_line(r: dict[str, Any], online: int | None = None) -> str:
    """One progress line for round record `r`; `online`: devices up when its task went out (default: the
    record's `reported`, the devices that reported the round)."""
    if r.get("state") != "completed":
        return f"round {r['round']}: {r.get('state')} (will be retried from model v{r.get('model_version')})"
    loss = "n/a" if r.get("train_loss") is None else f"{r['train_loss']:.3f}"
    eps = "inf" if r.get("epsilon") is None else f"{r['epsilon']:.2f}"
    return (
        f"round {r['round']}: done in {r['seconds']:.1f} s, "
        f"{r['survivors']}/{online or r['reported']} devices "
        f"survived, train loss {loss}, epsilon {eps} (delta {r['delta']:g}), uplink "
        f"{r['uplink_bytes_per_device']} B/device vs {r['dense_fp32_bytes']} B dense fp32"
    )
