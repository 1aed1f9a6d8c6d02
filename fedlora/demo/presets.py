"""Demo sizes per model: the real pretrained model by default, the tiny random model for quick tests.

`smollm2-135m` (and any other real model given by name or path) exports FFA-LoRA (alpha 96) and runs 4
devices behind 1 gateway for 3 rounds of 6 local steps on 2 x 128-token batches: sized for a quiet
2-core machine to finish the first run (GGUF conversion and export included) within 8 minutes and a
cached run within 4 (targets; docs/demo.md has what was measured). Its data is the "public" tier of the
stdlib-docstring corpus, which carries no DP noise: with a cohort of 3-4 devices, noise that buys a
meaningful ε on 184,320 LoRA values would be about a hundred times the update's norm (docs/demo.md,
"Privacy"); `--noise-multiplier` shows that cost when wanted.

`tiny-llama` keeps the original quick run (8 devices, 2 gateways, 5 rounds, distributed Skellam noise on
a random 126K-parameter byte model): it shows the machinery, not learning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TINY_MODELS = ("tiny-llama", "tiny-gpt2")
DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class DemoPreset:
    """Defaults the demo uses for one model; command-line options override each of them."""

    devices: int
    gateways: int
    rounds: int
    seq_len: int
    settings: dict[str, Any] = field(default_factory=dict)  # DemoSettings fields
    lora_alpha: float = 16.0  # the bundle's LoRA scaling (r = 8)
    ffa: bool = False  # export FFA-LoRA (only B trains and travels)
    eval_max_rows: int | None = None  # held-out rows evaluated per version (None: all)
    completion_tokens: int = 24
    # A dropped device is killed this many seconds after the task (before, during or after its upload).
    kill_window_s: tuple[float, float] = (0.3, 6.0)
    # Restart a killed device this many seconds after the kill (None: when the next task goes out).
    restart_after_s: float | None = None
    online_timeout_s: float = 120.0  # how long the demo waits for every node before starting the cloud
    # Multiply the stage deadlines by the load average per core (1..8) measured at start.
    scale_timeouts_with_load: bool = False


# The cloud refuses a ring that cannot hold n clients' q-bit values plus the summed DP noise: with 8-10
# devices and noise multiplier 0.5, 10-bit values in a 32-bit ring fit (12-bit ones would need 33 bits).
TINY = DemoPreset(
    devices=8,
    gateways=2,
    rounds=5,
    seq_len=64,
    settings={"quant_bits": 10, "ring_bits": 32},
    completion_tokens=32,
)

# Seconds per stage for a 135M model on a loaded 2-core box: advertising waits for restarted devices to
# reload the model, "masked" covers 8 training steps of 4 device processes sharing the cores.
REAL_TIMEOUTS_S = {
    "advertise": 30.0,
    "shares": 15.0,
    "masked": 180.0,
    "consistency": 15.0,
    "unmask": 15.0,
    "partial": 30.0,
}

# FFA-LoRA (A frozen, only B trains and travels) with alpha 96: the preset that reached the standard-FL
# baseline's target in 0.45x its modelled time with 8.9x fewer uplink bytes (docs/benchmarks.md,
# "smollm2-135m").
REAL = DemoPreset(
    devices=4,
    gateways=1,
    rounds=3,
    seq_len=128,
    lora_alpha=96.0,
    ffa=True,
    settings={
        "local_steps": 6,
        "batch_size": 2,
        "learning_rate": 2e-3,
        "clip_norm": 10.0,
        "mechanism": "none",
        "noise_multiplier": 0.0,
        "tier": "public",
        "keep_fraction": 1.0,
        # docs/benchmarks.md, "smollm2-135m": 7-bit rotated values in the smallest ring that holds the
        # devices' sum (ring_bits 0: q + ceil(log2 total_devices), resolved when the demo starts)
        "quant_bits": 7,
        "ring_bits": 0,
        "weight_reference": 3.7,
        "stage_timeouts_s": REAL_TIMEOUTS_S,
        "keepalive_s": 60,
    },
    eval_max_rows=16,
    # Killed as its task goes out, before it can advertise, and restarted with the next task: the round
    # goes on without it after the advertise deadline. A device trains in a child process and answers the
    # roster within ~0.3 s of the task, so a victim killed 0.3-3 s after the task had sent its shares and
    # cost the masked deadline (307 s per round at load 1-3); one restarted 5 s after the kill came back
    # in time to advertise, and no round showed a dropout (docs/demo.md, "Deadlines on a busy machine").
    kill_window_s=(0.0, 0.0),
    restart_after_s=None,
    online_timeout_s=600.0,
    scale_timeouts_with_load=True,
)


def preset_for(model: str) -> DemoPreset:
    """TINY for the built-in random models, REAL for everything else."""
    return TINY if model in TINY_MODELS else REAL
