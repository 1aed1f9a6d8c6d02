"""A trainer in a child process, so the device's event loop keeps running while a step computes.

ONNX Runtime 1.19.2's training bindings (`Module.train_step`, `Optimizer.step`) hold Python's GIL for
the whole call: measured on SmolLM2-135M, a thread that wakes every 10 ms saw a 2.5 s gap during one
step on an idle 2-core machine (torch's ops release the GIL: 0.03 s). On a device that stalls the
agent's event loop and its MQTT client thread for a step at a time, so keys, shares and keepalives wait
for training (docs/device.md, "Training in a child process"). `TrainerProcess` therefore owns the
trainer in a `spawn`ed child and runs whole jobs there; the parent blocks only in `Connection.recv`,
which releases the GIL.

Protocol over one `multiprocessing` pipe, parent → child: `("job", TrainingJob)` or `("stop",)`;
child → parent: first `("ready", info)` or `("error", exception)`, then one `TrainingOutcome` per job.
The child exits when the pipe closes (the parent died) or on "stop", and as soon as its parent process
is gone even in the middle of a job (`exit_when_parent_exits`): an orphan would otherwise train on for
the rest of the job, taking the CPU from the devices still running, and die on its reply with a
BrokenPipeError traceback. A child that dies during a job (killed, out of memory) turns that job into an
error outcome; the next job starts a new child.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from edge_runtime.agent.worker import TrainingJob, TrainingOutcome, TrainingWorker, run_job
from edge_runtime.trainer.base import Trainer, TrainerError
from edge_runtime.trainer.select import create_trainer
from fl_protocol.errors import FedloraError
from fl_protocol.manifest import Manifest

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class TrainerInfo:
    """What the parent needs to know about the child's trainer (the `Trainer` attributes it reads)."""

    manifest: Manifest
    backend_name: str
    providers: list[str]
    selection_reason: str


def exit_when_parent_exits(parent_sentinel: Any, *, exit_now: Callable[[int], object] = os._exit) -> None:
    """Block until `parent_sentinel` (the parent process's sentinel, or any waitable) is ready, then end
    this process at once with code 0. Run on a daemon thread of the child: with ONNX Runtime holding the
    GIL through a step, the child ends at the next step boundary after its parent died."""
    wait([parent_sentinel])
    exit_now(0)


def _watch_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=exit_when_parent_exits, args=(parent.sentinel,), name="parent-watch", daemon=True
        ).start()


def serve(
    conn: Connection, bundle_dir: str, backend: str, device: str, spinning: bool, log_level: int
) -> None:
    """Child process main: build the trainer, report, then run jobs until "stop" or the pipe closes."""
    logging.basicConfig(
        level=log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s [trainer]: %(message)s"
    )
    try:
        trainer = create_trainer(Path(bundle_dir), backend=backend, device=device, spinning=spinning)
    except FedloraError as exc:
        conn.send(("error", exc))
        return
    except Exception as exc:  # noqa: BLE001 - reported to the parent as a TrainerError
        conn.send(("error", TrainerError(f"trainer process: {type(exc).__name__}: {exc}")))
        return
    info = TrainerInfo(
        trainer.manifest, trainer.backend_name, list(trainer.providers), trainer.selection_reason
    )
    try:
        try:
            conn.send(("ready", info))
        except OSError:
            return  # the parent is gone
        _watch_parent()
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if message[0] != "job":
                return
            outcome = run_job(trainer, message[1])
            try:
                conn.send(outcome)
            except OSError:  # BrokenPipeError: the parent went away during the job
                return
    finally:
        trainer.close()


class TrainerProcess:
    """A trainer owned by a child process; `run_job` has the semantics of `worker.run_job`.

    Construction starts the child and waits until its trainer is built (bundle verified, sessions
    loaded). Raises what `create_trainer` raises there (TrainerError, BundleError, ConfigError, each
    with its message), or TrainerError if the child dies before it reports. Attributes mirror the
    `Trainer` ones the agent reads: `manifest`, `total_length`, `backend_name`, `providers`,
    `selection_reason`. Not thread-safe: one caller (the training worker's thread) at a time.
    """

    def __init__(
        self, bundle_dir: Path, *, backend: str = "auto", device: str = "auto", spinning: bool = True
    ) -> None:
        self._args = (str(bundle_dir), backend, device, spinning)
        self._context = multiprocessing.get_context("spawn")  # no fork of a threaded process
        self._process: Any = None
        self._conn: Connection | None = None
        self._closed = False
        info = self._start()
        self.manifest = info.manifest
        self.backend_name = info.backend_name
        self.providers = info.providers
        self.selection_reason = info.selection_reason
        logger.info(
            "trainer backend %s on %s (%s) in child process %d; bundle %s",
            self.backend_name,
            ",".join(self.providers),
            self.selection_reason,
            self.pid,
            self.manifest.bundle_id[:12],
        )

    @property
    def total_length(self) -> int:
        """Length of the bundle's flat LoRA vector."""
        return self.manifest.total_length

    @property
    def pid(self) -> int | None:
        """The child's process id (None before a restart has started it)."""
        return None if self._process is None else int(self._process.pid)

    def _start(self) -> TrainerInfo:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=serve,
            args=(child, *self._args, logging.getLogger().getEffectiveLevel()),
            name="fedlora-trainer",
            daemon=True,
        )
        process.start()
        child.close()
        try:
            reply = parent.recv()
        except (EOFError, OSError) as exc:
            process.join(STOP_TIMEOUT_S)
            parent.close()
            raise TrainerError(
                f"trainer process exited before it was ready (exit code {process.exitcode})"
            ) from exc
        if reply[0] == "error":
            process.join(STOP_TIMEOUT_S)
            parent.close()
            raise reply[1]
        self._process, self._conn = process, parent
        info: TrainerInfo = reply[1]
        return info

    def run_job(self, job: TrainingJob) -> TrainingOutcome:
        """Run `job` in the child; a dead child makes an error outcome (and a fresh child next time)."""
        if self._closed:
            return TrainingOutcome(job.round_id, error="trainer process closed")
        try:
            if self._conn is None:
                self._start()
            assert self._conn is not None
            self._conn.send(("job", job))
            outcome: TrainingOutcome = self._conn.recv()
            return outcome
        except (EOFError, OSError, FedloraError) as exc:
            process = self._process
            self._discard()  # joins the child, so its exit code is known
            code = None if process is None else process.exitcode
            logger.warning("round %d: trainer process failed (%s, exit code %s)", job.round_id, exc, code)
            return TrainingOutcome(job.round_id, error=f"trainer process exited (exit code {code})")

    def _discard(self, grace_s: float = 1.0) -> None:
        # Take the handles first: close() on the agent's thread and a failing job on the worker's
        # thread may both get here.
        conn, process = self._conn, self._process
        self._conn, self._process = None, None
        if conn is not None:
            conn.close()
        if process is not None:
            process.join(grace_s)
            if process.is_alive():
                process.kill()
                process.join(STOP_TIMEOUT_S)

    def close(self) -> None:
        """Ask the child to stop (it finishes a step in progress; killed after STOP_TIMEOUT_S); idempotent.

        A job running on another thread at that moment ends with an error outcome.
        """
        self._closed = True
        conn = self._conn
        if conn is not None:
            try:
                conn.send(("stop",))
            except OSError:
                pass
        self._discard(grace_s=STOP_TIMEOUT_S)


def start_training(
    trainer: Trainer | None, bundle_dir: Path, *, backend: str, device: str, spinning: bool = True
) -> tuple[Trainer | TrainerProcess, TrainingWorker]:
    """The device's trainer and the worker thread that runs its jobs.

    A given `trainer` (tests, embedding) runs on the worker thread. Otherwise backend "torch" builds one
    in this process (torch releases the GIL while it computes) and any other choice ("auto", "ort")
    starts a `TrainerProcess`; `spinning` goes to `create_trainer`. Raises what `create_trainer` raises.
    """
    if trainer is not None:
        return trainer, TrainingWorker(functools.partial(run_job, trainer))
    if backend == "torch":
        local = create_trainer(bundle_dir, backend="torch", device=device)
        return local, TrainingWorker(functools.partial(run_job, local))
    remote = TrainerProcess(bundle_dir, backend=backend, device=device, spinning=spinning)
    return remote, TrainingWorker(remote.run_job)
