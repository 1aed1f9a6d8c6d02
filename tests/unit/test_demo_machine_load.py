"""The demo on a busy machine: the load factor, and its own torch work on one thread once cores are taken."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from export.adapter import write_adapter
from export.pipeline import ExportOptions, run_export
from fedlora.demo import completions, machine_load
from fl_protocol.flatvec import FlatVector, load_flat_vector, save_flat_vector
from tests.kit.bundles import tiny_llama_config


def _machine(monkeypatch: pytest.MonkeyPatch, load: float | None, cores: int = 2) -> None:
    def getloadavg() -> tuple[float, float, float]:
        if load is None:
            raise OSError("no load average here")
        return (load, load, load)

    monkeypatch.setattr(machine_load.os, "getloadavg", getloadavg)
    monkeypatch.setattr(machine_load.os, "cpu_count", lambda: cores)


@pytest.mark.parametrize(
    ("load", "cores", "factor"), [(0.3, 2, 1.0), (2.0, 2, 1.0), (7.0, 2, 3.5), (40.0, 2, 8.0), (None, 2, 1.0)]
)
def test_load_factor_is_load_per_core_clamped(
    monkeypatch: pytest.MonkeyPatch, load: float | None, cores: int, factor: float
) -> None:
    _machine(monkeypatch, load, cores)
    assert machine_load.load_factor() == factor


def test_compute_threads_drop_to_one_only_when_every_core_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, 1.5)
    assert machine_load.compute_threads(2) == 2
    _machine(monkeypatch, 9.0)
    assert machine_load.compute_threads(2) == 1
    _machine(monkeypatch, None)
    assert machine_load.compute_threads(4) == 4
    with pytest.raises(ValueError, match="default must be >= 1"):
        machine_load.compute_threads(0)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-layer Llama bundle (byte tokenizer) and a PEFT adapter of a perturbed LoRA vector."""
    root = tmp_path_factory.mktemp("completions")
    torch.manual_seed(7)
    AutoModelForCausalLM.from_config(tiny_llama_config()).save_pretrained(root / "hf")
    options = ExportOptions(
        model=str(root / "hf"),
        out_dir=root / "bundle",
        lora_r=4,
        lora_alpha=8.0,
        seq_len=16,
        tokenizer="byte",
    )
    manifest = run_export(options, progress=lambda _line: None)
    initial = load_flat_vector(manifest.path("initial_vector.safetensors")).values
    save_flat_vector(root / "v1.safetensors", FlatVector(initial + 0.05, manifest.bundle_id, 1))
    return manifest.bundle_dir, write_adapter(manifest.bundle_dir, root / "v1.safetensors", root / "adapter")


@pytest.mark.parametrize(("load", "threads_seen"), [(9.0, {1}), (0.5, {2})])
def test_completions_decode_on_one_thread_on_a_busy_machine_and_restore_torch(
    monkeypatch: pytest.MonkeyPatch, adapter: tuple[Path, Path], load: float, threads_seen: set[int]
) -> None:
    bundle, adapter_dir = adapter
    _machine(monkeypatch, load)
    seen: list[int] = []
    greedy = completions._greedy

    def recording_greedy(*args: Any) -> list[int]:
        seen.append(torch.get_num_threads())
        return greedy(*args)

    monkeypatch.setattr(completions, "_greedy", recording_greedy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = completions.greedy_completions(bundle, adapter_dir, ["def f(x):", "import os"], new_tokens=3)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert [set(item) for item in out] == [{"prompt", "before", "after"}] * 2
    assert len(seen) == 4 and set(seen) == threads_seen
