"""How busy this machine is, and what the demo does about it (docs/demo.md, "Deadlines on a busy machine").

The demo shares its machine with whatever else runs there. `load_factor` scales the stage deadlines of a
real model; `compute_threads` keeps the demo's own torch work (the greedy completions) off intra-op
threads when every core is already taken.
"""

from __future__ import annotations

import os


def load_factor() -> float:
    """How oversubscribed this machine is: 1-minute load average per core, clamped to [1, 8].

    1.0 when the load average cannot be read (OSError, e.g. on a platform without it).
    """
    try:
        load = os.getloadavg()[0]
    except OSError:
        return 1.0
    return min(8.0, max(1.0, load / (os.cpu_count() or 1)))


def compute_threads(default: int) -> int:
    """Intra-op threads for the demo's own torch work: `default` while cores are idle, 1 once the 1-minute
    load average reaches the core count.

    With more runnable threads than cores, every parallel region waits for a descheduled thread: 24
    greedy tokens of smollm2-135m took 33-49 s with 2 threads and 3-6 s with 1 at load 9-10 on 2 cores,
    and the demo's three before/after completions took 6.5 min instead of under 1 (docs/demo.md,
    "Time and memory"). `default` (>= 1) is what torch would use otherwise.
    """
    if default < 1:
        raise ValueError(f"default must be >= 1, got {default}")
    return 1 if load_factor() > 1.0 else default
