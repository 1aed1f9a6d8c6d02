"""The device's trainer in a child process (edge_runtime.agent.trainer_process).

ONNX Runtime's training bindings hold the GIL through a step, so the device trains in a child process
and its event loop keeps running. These tests check that the child really is another process, that it
trains exactly what the in-process `run_job` trains, that a dead child costs one job (not the device),
that a bad bundle fails at start-up with the error `create_trainer` raises, and that a child whose
parent went away ends quietly instead of training on.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.agent.trainer_process import TrainerProcess, exit_when_parent_exits, serve
from edge_runtime.agent.worker import TrainingJob, run_job
from edge_runtime.data import LocalDataset, Record
from edge_runtime.trainer import create_trainer
from fl_protocol.manifest import BundleError, load_manifest
from fl_protocol.tokenizer import ByteTokenizer


@pytest.fixture(scope="module")
def bundle(tiny_llama_bundle: Path) -> Path:
    return tiny_llama_bundle  # read only


@pytest.fixture(scope="module")
def trainer_process(bundle: Path):  # type: ignore[no-untyped-def]
    process = TrainerProcess(bundle, backend="ort", device="cpu")
    yield process
    process.close()


def _job(length: int, round_id: int = 1) -> TrainingJob:
    records = [Record(f"document {i:03d} " + "lorem ipsum " * (i % 5 + 1), "public") for i in range(24)]
    data = LocalDataset.from_records(
        records, ByteTokenizer(), seq_len=32, tier="public", eval_fraction=0.2, seed=7
    )
    vector = np.random.default_rng(round_id).normal(0, 0.01, size=length).astype(np.float32)
    return TrainingJob(round_id, vector, data, steps=3, batch_size=2, learning_rate=1e-3)


def test_the_child_trains_what_the_in_process_trainer_trains(
    trainer_process: TrainerProcess, bundle: Path
) -> None:
    assert trainer_process.pid not in (None, os.getpid())
    assert trainer_process.backend_name == "ort"
    assert trainer_process.providers == ["CPUExecutionProvider"]
    job = _job(trainer_process.total_length)
    remote = trainer_process.run_job(job)
    local_trainer = create_trainer(bundle, backend="ort", device="cpu")
    try:
        local = run_job(local_trainer, job)
    finally:
        local_trainer.close()
    assert remote.error == "" and local.error == ""
    assert remote.delta is not None and local.delta is not None
    assert np.abs(remote.delta).max() > 1e-4  # training moved the vector: the comparison is not vacuous
    np.testing.assert_allclose(remote.delta, local.delta, rtol=0, atol=1e-6)
    assert remote.train_loss == pytest.approx(local.train_loss, abs=1e-6)
    assert remote.eval_loss == pytest.approx(local.eval_loss, abs=1e-6)


def test_a_killed_child_costs_one_job_and_the_next_job_starts_a_new_one(
    trainer_process: TrainerProcess,
) -> None:
    old_pid = trainer_process.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    lost = trainer_process.run_job(_job(trainer_process.total_length, round_id=2))
    assert lost.delta is None
    assert lost.error == "trainer process exited (exit code -9)"
    again = trainer_process.run_job(_job(trainer_process.total_length, round_id=3))
    assert again.error == "" and again.delta is not None
    assert trainer_process.pid not in (None, old_pid)


def test_a_bad_bundle_fails_at_start_with_the_trainers_own_error(bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="manifest"):
        TrainerProcess(tmp_path / "missing", backend="ort", device="cpu")


def test_close_is_idempotent_and_later_jobs_are_refused(bundle: Path) -> None:
    process = TrainerProcess(bundle, backend="ort", device="cpu")
    pid = process.pid
    process.close()
    process.close()
    assert process.pid is None
    with pytest.raises(ProcessLookupError, match="No such process"):
        os.kill(pid, 0)  # type: ignore[arg-type]
    refused = process.run_job(_job(process.total_length))
    assert refused.error == "trainer process closed"


def test_the_child_ends_as_soon_as_its_parent_process_is_gone() -> None:
    read_end, write_end = os.pipe()  # stands in for the parent's sentinel: ready once the parent is gone
    exits: list[int] = []
    watcher = threading.Thread(
        target=exit_when_parent_exits, args=(read_end,), kwargs={"exit_now": exits.append}
    )
    watcher.start()
    try:
        assert exits == []  # the parent is alive
        os.close(write_end)  # the parent died
        watcher.join(timeout=60)
    finally:
        os.close(read_end)
    assert not watcher.is_alive() and exits == [0]


def test_a_child_whose_parent_left_during_a_job_ends_quietly(bundle: Path) -> None:
    """Seen in the smollm2 demo: a killed device's trainer finished its job and died on the reply with a
    BrokenPipeError traceback in the device's log."""
    parent, child = multiprocessing.Pipe()
    raised: list[BaseException] = []

    def child_main() -> None:
        try:
            serve(child, str(bundle), "ort", "cpu", False, logging.WARNING)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            raised.append(exc)

    server = threading.Thread(target=child_main)
    server.start()
    assert parent.recv()[0] == "ready"
    parent.send(("job", _job(load_manifest(bundle).total_length)))
    parent.close()  # the parent goes away while the job runs
    server.join(timeout=300)
    assert not server.is_alive() and raised == []
