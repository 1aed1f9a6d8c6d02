"""The Ray executor: the virtual devices' local training as Ray actor tasks, spread over a Ray cluster.

    executor = RayExecutor(bundle_dir, shard_dirs, eval_records, devices, address="auto", workers=0)

Each worker is a Ray actor (one CPU) holding one `DeviceTrainer` (fedlora/simulate/executor.py), the same
code the default `LocalExecutor` runs in-process. A round's jobs go to whichever actor is idle and come
back in request order. A job's result depends only on its request (device, round, global vector, steps,
batch size, learning rate: the device's shuffle seed is its index, not the worker's), so a simulation's
report equals the local executor's for the same seed when every node runs the same training backend and
library versions (checked for the backend; docs/simulate.md, "Executors").

What travels to the workers: fedlora's own packages (Ray `runtime_env` py_modules, so workers run the
driver's code), every data shard's records and the held-out records (object store, once), each round's
global vector (object store, once per round), and the bundle's files only when `ship_bundle` is on and
a worker's node lacks the bundle at the driver's path with the same bundle id. Δ vectors come back as
float32 arrays in `TrainingOutcome`s.

`ray` is an optional dependency (the `ray` extra): importing this module does not import it.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import socket
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edge_runtime.agent.worker import TrainingOutcome
from edge_runtime.data import Record, load_records
from fedlora.corpus import CorpusRecord
from fedlora.simulate.executor import TIER, DeviceTrainer, TrainRequest, checked
from fl_protocol.errors import ConfigError, FedloraError
from fl_protocol.manifest import load_manifest

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'fedlora[ray]' (or pip install 'ray>=2.9')"
MISSING_RAY = f"executor 'ray' needs the ray package (not installed): {INSTALL_HINT}"
PROJECT_PACKAGES = ("fedlora", "edge_runtime", "fl_protocol", "aggregator_gateway", "fl_transport")


def check_ray_installed() -> None:
    """ConfigError (one line, with the install hint) when ray is not installed.

    Looks ray up without importing it: importing ray replaces `inspect.isgenerator` (Cython's patch),
    which changes the stdlib docstring corpus (fedlora/corpus.py) built after it by one record, so
    the simulation prepares its data before ray is imported.
    """
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(MISSING_RAY)


def require_ray() -> ModuleType:
    """The `ray` module; ConfigError (one line, with the install hint) when it is not installed."""
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise ConfigError(MISSING_RAY) from exc


def check_reachable(address: str, *, timeout_s: float = 10.0) -> None:
    """FedloraError unless something accepts TCP connections at a "HOST:PORT" address ("" and "auto"
    pass): Ray itself keeps retrying an absent head for minutes without a word to the user."""
    if address in ("", "auto"):
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise FedloraError(f"no Ray cluster answers at {address}: {exc}") from exc


def package_dir(name: str) -> str:
    """Directory of the imported package `name` (what Ray's py_modules uploads to the workers)."""
    module = importlib.import_module(name)
    if module.__file__ is None:
        raise FedloraError(f"package {name} has no directory to send to Ray workers")
    return str(Path(module.__file__).parent)


def runtime_env() -> dict[str, Any]:
    """The Ray job's runtime_env: fedlora's packages as py_modules, so workers run the driver's code.

    Ray uploads local directories only at the job level (`ray.init`); a caller that initialises Ray
    itself passes this to its own `ray.init` (or installs fedlora on every node).
    """
    return {"py_modules": [package_dir(name) for name in PROJECT_PACKAGES]}


def bundle_files(bundle_dir: Path) -> dict[str, bytes]:
    """Every file of the bundle by its path relative to `bundle_dir` (POSIX separators)."""
    files = sorted(p for p in bundle_dir.rglob("*") if p.is_file())
    return {p.relative_to(bundle_dir).as_posix(): p.read_bytes() for p in files}


def worker_bundle_dir(
    path: Path, bundle_id: str, fetch: Callable[[], Mapping[str, bytes]] | None, scratch: Path
) -> Path:
    """The bundle on a worker's node: `path` if it holds bundle `bundle_id`, else `fetch()`'s files
    written under `scratch` (the trainer verifies every file's sha256 when it loads them).

    Raises FedloraError when the bundle is not on this node and nothing was shipped, or a shipped file
    name leaves the bundle directory.
    """
    try:
        if load_manifest(path, verify=False).bundle_id == bundle_id:  # the trainer verifies the files
            return path
    except (FedloraError, OSError):
        pass  # not here, or not this bundle
    if fetch is None:
        raise FedloraError(f"bundle {path} is not on this Ray node: copy it there, or ship it (ship_bundle)")
    target = (scratch / "bundle").resolve()
    for name, data in fetch().items():
        dest = (target / name).resolve()
        if not dest.is_relative_to(target):
            raise FedloraError(f"shipped bundle file {name!r} leaves the bundle directory")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    return target


class RayDeviceWorker:
    """A Ray actor's body: one `DeviceTrainer` on the bundle as found on, or shipped to, its node.

    `shipped`: [] or [ObjectRef of `bundle_files()`]; the list keeps Ray from fetching it unless needed.
    """

    def __init__(
        self,
        bundle_path: str,
        bundle_id: str,
        shipped: list[Any],
        shard_records: Sequence[Sequence[Record]],
        eval_records: Sequence[CorpusRecord],
    ) -> None:
        self._scratch = tempfile.TemporaryDirectory(prefix="fedlora-ray-")
        fetch = None
        if shipped:
            ray = require_ray()
            fetch = lambda: ray.get(shipped[0])  # noqa: E731
        bundle_dir = worker_bundle_dir(Path(bundle_path), bundle_id, fetch, Path(self._scratch.name))
        # actors share their node's cores: ONNX Runtime's idle pool threads sleep instead of spinning
        self._device = DeviceTrainer(bundle_dir, shard_records, eval_records, spinning=False)

    def describe(self) -> tuple[str, np.ndarray]:
        """(training backend name, the bundle's initial LoRA vector)."""
        return self._device.trainer.backend_name, self._device.initial_vector

    def train(self, request: TrainRequest, global_vector: np.ndarray) -> TrainingOutcome:
        """One device's job from `global_vector` (sent apart: an object-store ref, resolved by Ray); a
        failure comes back as the outcome's error text."""
        return self._device.run(dataclasses.replace(request, global_vector=global_vector))

    def evaluate(self, vector: np.ndarray) -> float:
        """Held-out loss of `vector`."""
        return self._device.evaluate(vector)

    def step_seconds(self, steps: int, batch_size: int, learning_rate: float) -> float:
        """`DeviceTrainer.step_seconds` on this worker: a whole `steps`-step job's seconds / `steps`."""
        return self._device.step_seconds(steps=steps, batch_size=batch_size, learning_rate=learning_rate)

    def close(self) -> None:
        """Release the trainer and any shipped bundle."""
        self._device.close()
        self._scratch.cleanup()


class RayExecutor:
    """Devices trained by Ray actors (see the module docstring); implements `Executor`.

    `address`: "" starts a local Ray instance for the run (with `workers` CPUs when > 0), "auto" joins the
    cluster this machine belongs to, "HOST:PORT" joins that cluster's head; an already initialised Ray
    (`ray.init` called by the caller) is used as it is and left running. `workers`: actors, one trainer
    and one CPU each (0: one per CPU of the cluster, at most one per device). `ship_bundle` (default:
    when `address` is given) puts the bundle's files into the object store for nodes that lack them.

    Raises ConfigError when ray is missing or more workers are asked for than the cluster has CPUs;
    FedloraError when a worker cannot start, the workers' training backends differ, or a job fails.
    """

    def __init__(
        self,
        bundle_dir: Path,
        shard_dirs: Sequence[Path],
        eval_records: Sequence[CorpusRecord],
        devices: int,
        *,
        address: str = "",
        workers: int = 0,
        ship_bundle: bool | None = None,
    ) -> None:
        self._ray = ray = require_ray()
        self._owns_ray = not ray.is_initialized()
        self._workers: list[Any] = []
        if self._owns_ray:
            self._init(address, workers)
        try:
            count = self._worker_count(workers, devices)
            ship = bool(address) if ship_bundle is None else ship_bundle
            self._start(bundle_dir, shard_dirs, eval_records, count=count, ship=ship)
            self.initial_vector = self._check_workers()
        except BaseException:
            self.close()
            raise

    def _init(self, address: str, workers: int) -> None:
        """Start a local Ray instance (address "") or join a cluster, with fedlora's code as py_modules."""
        check_reachable(address)
        try:
            self._ray.init(
                address=address or None,
                num_cpus=None if address else (workers or None),
                include_dashboard=False,
                logging_level=logging.WARNING,
                runtime_env=runtime_env(),
            )
        except Exception as exc:  # ray raises ConnectionError, ValueError, RuntimeError, ...
            first = (str(exc).strip().splitlines() or [""])[0]
            where = f"join the Ray cluster at {address}" if address else "start a local Ray instance"
            raise FedloraError(f"cannot {where}: {type(exc).__name__}: {first}") from exc

    def _worker_count(self, workers: int, devices: int) -> int:
        cpus = int(self._ray.cluster_resources().get("CPU", 0))
        if cpus < 1:
            raise ConfigError("the Ray cluster has no CPUs for workers")
        if workers > cpus:
            raise ConfigError(f"ray_workers={workers} exceeds the Ray cluster's {cpus} CPUs")
        return max(1, min(workers or cpus, devices))

    def _start(
        self,
        bundle_dir: Path,
        shard_dirs: Sequence[Path],
        eval_records: Sequence[CorpusRecord],
        *,
        count: int,
        ship: bool,
    ) -> None:
        """Put what travels into the object store once and start `count` actors on it."""
        ray = self._ray
        shipped = [ray.put(bundle_files(bundle_dir))] if ship else []
        shards = ray.put([load_records(d, default_tier=TIER) for d in shard_dirs])
        held_out = ray.put(list(eval_records))
        actor = ray.remote(num_cpus=1)(RayDeviceWorker)
        bundle_id = load_manifest(bundle_dir).bundle_id
        logger.info("starting %d Ray workers (bundle shipped: %s)", count, ship)
        path = str(bundle_dir.resolve())
        self._workers = [actor.remote(path, bundle_id, shipped, shards, held_out) for _ in range(count)]

    def _check_workers(self) -> np.ndarray:
        """The initial vector, once every worker has started with the same backend and vector."""
        described = self._get([w.describe.remote() for w in self._workers])
        backends = sorted({backend for backend, _vector in described})
        if len(backends) != 1:
            raise FedloraError(f"Ray workers use different training backends ({', '.join(backends)})")
        vectors = [vector for _backend, vector in described]
        if any(not np.array_equal(vectors[0], v) for v in vectors[1:]):
            raise FedloraError("Ray workers loaded different initial LoRA vectors")
        return np.array(vectors[0])

    def _get(self, refs: Any) -> Any:
        """ray.get, with a worker's failure as one FedloraError line."""
        try:
            return self._ray.get(refs)
        except self._ray.exceptions.RayError as exc:
            raise _failure(exc) from exc

    def train_many(self, requests: Sequence[TrainRequest]) -> list[TrainingOutcome]:
        """Run the jobs on whichever workers are idle; outcomes in request order (Δ copied, writable).

        Each distinct global vector goes into the object store once; workers fetch it from there.
        """
        ray = self._ray
        vectors: dict[int, Any] = {}
        for r in requests:
            if id(r.global_vector) not in vectors:
                vectors[id(r.global_vector)] = ray.put(r.global_vector)

        def submit(actor: Any, r: TrainRequest) -> Any:
            job = dataclasses.replace(r, global_vector=np.empty(0, np.float32))  # the vector travels by ref
            return actor.train.remote(job, vectors[id(r.global_vector)])

        pool = importlib.import_module("ray.util").ActorPool(self._workers)
        try:
            results = list(pool.map(submit, requests))
        except ray.exceptions.RayError as exc:
            raise _failure(exc) from exc
        outcomes = []
        for r, outcome in zip(requests, results, strict=True):
            # arrays from the object store are read-only views: copy Δ
            delta = None if outcome.delta is None else np.array(outcome.delta)
            outcomes.append(checked(r, dataclasses.replace(outcome, delta=delta)))
        return outcomes

    def evaluate(self, vector: np.ndarray) -> float:
        """Held-out loss of `vector` (on the first worker; every worker gives the same)."""
        return float(self._get(self._workers[0].evaluate.remote(vector)))

    def step_seconds(self, *, steps: int, batch_size: int, learning_rate: float) -> float:
        """`DeviceTrainer.step_seconds` on the first worker (the others idle meanwhile)."""
        return float(self._get(self._workers[0].step_seconds.remote(steps, batch_size, learning_rate)))

    def close(self) -> None:
        """Release the workers' trainers, end the actors, and stop Ray if this executor started it."""
        ray, workers, self._workers = self._ray, self._workers, []
        try:
            if workers:
                ray.get([w.close.remote() for w in workers])
        except ray.exceptions.RayError as exc:
            logger.warning("closing Ray workers: %s", _failure(exc))
        finally:
            for w in workers:
                ray.kill(w)
            if self._owns_ray:
                ray.shutdown()


def _failure(exc: BaseException) -> FedloraError:
    """A Ray error as one line: the worker's own exception type and first message line."""
    cause = getattr(exc, "cause", None) or exc
    first = (str(cause).strip().splitlines() or [""])[0]
    return FedloraError(f"Ray worker failed: {type(cause).__name__}: {first}")
