"""Poisoning robustness (issue 5): 20 devices, 4 malicious; groups + a robust rule contain the attack.

In process, no broker: real bundle and trainer, real codec, the gateway's real RoundDriver over real
SecAgg+ clients, FedAvg in the cloud (bench/robustness.py holds the federation; docs/robustness.md the
method and the full 3-round table). To fit the default suite's time budget this runs 2 rounds instead
of 3; `-m slow` runs the full 3-round comparison.

Why the assertions go beyond "within 5%": 5% of the eval loss (≈ 0.27 nats) is more than the whole
decrease that clean training achieves in 2–3 rounds (≈ 0.17–0.19), so "within 5%" alone would also pass
an attacked run that learnt nothing. The tests therefore also ask for the share of the clean run's loss
decrease that a run keeps ("progress kept"): ≥ 80% with the defence, < 50% without it, and a final loss
at least 0.05 above the clean one without it. Re-running the clean federation with other codec and
rounding seeds moves its final loss by less than 0.01 (docs/robustness.md), so 0.05 is a real gap.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.robustness import (  # noqa: E402
    PAIRS_MEDIAN,
    DeviceFleet,
    Federation,
    Outcome,
    Scenario,
    encode_all,
    gateway_round,
    make_task,
    prepare,
    progress_kept,
    round_seed,
    run_scenario,
)
from fedlora.demo.workspace import DemoData  # noqa: E402

MIN_GAP = 0.05  # nats above the clean final loss that count as "measurably worse" (> 5x seed noise)
ROBUST_PROGRESS = 0.8
UNDEFENDED_PROGRESS = 0.5

Setup = tuple[DeviceFleet, Path, DemoData]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """Bundle (exported once), 20 non-IID shards, one shared trainer for all devices."""
    root = tmp_path_factory.mktemp("robustness")
    federation = Federation(rounds=2)
    bundle_dir, data = prepare(root / "cache", root, federation)
    fleet = DeviceFleet(bundle_dir, data, federation)
    yield fleet, bundle_dir, data
    fleet.close()


@pytest.fixture(scope="module")
def clean(setup: Setup) -> Outcome:
    """Every device honest, one group, plain sum."""
    outcome = run_scenario(setup[0], Scenario("clean", 0.0), setup[1], setup[2])
    assert outcome.final_loss < outcome.eval_losses[0] - 0.1, "clean training must make progress"
    return outcome


def run(setup: Setup, scenario: Scenario) -> Outcome:
    """One scenario on the shared fleet."""
    return run_scenario(setup[0], scenario, setup[1], setup[2])


def assert_contained(defended: Outcome, clean: Outcome) -> None:
    """The issue's bound (≤ 1.05 × clean) and most of the clean run's progress kept."""
    assert defended.final_loss <= 1.05 * clean.final_loss
    assert progress_kept(defended, clean.final_loss) >= ROBUST_PROGRESS, defended


def test_sign_flip_needs_groups_and_a_robust_rule(setup: Setup, clean: Outcome) -> None:
    """−20·Δ from 4 of 20 devices undoes most progress; pairs + coordinate median keep it."""
    undefended = run(setup, Scenario("sign-flip x20", -20.0))
    defended = run(setup, Scenario("sign-flip x20", -20.0, PAIRS_MEDIAN))
    assert undefended.final_loss >= clean.final_loss + MIN_GAP, (undefended, clean)
    assert progress_kept(undefended, clean.final_loss) < UNDEFENDED_PROGRESS
    assert_contained(defended, clean)


def test_scaled_update_reaches_the_plain_sum_and_not_the_median(setup: Setup) -> None:
    """×20 unclipped from 4 devices moves the round-1 mean update by more than 1.5× the clean update's
    norm under the plain sum (measured: 2.5×), and by less than half of it under pairs + median
    (measured: 0.18×; the median of honest pairs alone is 0.12× off the mean): the attack really lands,
    and the defence removes it."""
    fleet = setup[0]
    initial = fleet.initial_vector
    task = make_task(fleet.federation, initial, 1, seed=0)
    graph_seed = round_seed(0, "graph", 1)

    def mean_update(scenario: Scenario) -> np.ndarray:
        result = gateway_round(task, encode_all(fleet, scenario, task, initial), scenario.policy, graph_seed)
        assert result.count == fleet.federation.devices
        return result.vector_sum / result.count

    honest = mean_update(Scenario("clean", 0.0))
    attacked = mean_update(Scenario("x20", 20.0))
    defended = mean_update(Scenario("x20", 20.0, PAIRS_MEDIAN))
    norm = float(np.linalg.norm(honest))
    assert np.linalg.norm(attacked - honest) > 1.5 * norm
    assert np.linalg.norm(defended - honest) < 0.5 * norm


def test_scaled_update_is_contained_by_groups(setup: Setup, clean: Outcome) -> None:
    """×20 from 4 of 20 devices with pairs + coordinate median: final loss as clean."""
    assert_contained(run(setup, Scenario("x20", 20.0, PAIRS_MEDIAN)), clean)


@pytest.mark.slow
def test_full_three_rounds(tmp_path: Path) -> None:
    """The bench's configuration (3 rounds): both attacks, with and without the defence."""
    federation = Federation(rounds=3)
    bundle_dir, data = prepare(tmp_path / "cache", tmp_path, federation)
    fleet = DeviceFleet(bundle_dir, data, federation)
    try:
        full: Setup = (fleet, bundle_dir, data)
        clean = run(full, Scenario("clean", 0.0))
        for name, factor in (("x20", 20.0), ("sign-flip x20", -20.0)):
            assert_contained(run(full, Scenario(name, factor, PAIRS_MEDIAN)), clean)
        undefended = run(full, Scenario("sign-flip x20", -20.0))
        assert undefended.final_loss >= clean.final_loss + MIN_GAP
    finally:
        fleet.close()
