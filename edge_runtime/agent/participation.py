"""Should this device take part in a round? Trusted-mode opt-in, gates, privacy ledger, local data, model
shape (step 1).

Each check that says no becomes a `Skip` with a one-line reason the agent publishes as
`Status(state="skipped")`; nothing about the round is sent to the gateway.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.agent.config import DeviceConfig
from edge_runtime.agent.gates import check_gates
from edge_runtime.data import LocalDataset, load_records
from edge_runtime.errors import NoLocalDataError
from edge_runtime.ledger import PrivacyLedger, RoundRef
from edge_runtime.text_tokenizer import TextTokenizer
from fl_protocol.errors import ConfigError, PrivacyError
from fl_protocol.wire.messages import RoundTask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skip:
    """Sit the round out, for `reason`; `details` are the gate readings for the status message."""

    reason: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ready:
    """Every check passed: the round's training data and the gate readings."""

    dataset: LocalDataset
    round_epsilon: float
    details: dict[str, Any] = field(default_factory=dict)


def decide(
    task: RoundTask,
    *,
    config: DeviceConfig,
    ledger: PrivacyLedger,
    tokenizer: TextTokenizer,
    seq_len: int,
    model_dimension: int,
    ref: RoundRef | None = None,
) -> Ready | Skip:
    """Run the checks of docs/round-protocol.md "The device" step 1 in order, cheapest first.

    `ref` names the release in the ledger (federation, round, task digest): one already charged costs 0."""
    if task.secagg.trusted and not config.device.allow_trusted_gateway:
        return Skip(
            "trusted-gateway round (updates sent without secure aggregation) and "
            "[device] allow_trusted_gateway is false"
        )
    report = check_gates(config.gates)
    details: dict[str, Any] = report.readings.details()
    if not report.passed:
        return Skip(f"gates: {report.reason}", details)
    if task.model_dimension != model_dimension:
        return Skip(
            f"task model_dimension {task.model_dimension} differs from this bundle's {model_dimension}",
            details,
        )
    try:
        round_epsilon, _after = ledger.check(task, ref)
    except (PrivacyError, ConfigError) as exc:
        return Skip(f"privacy ledger: {exc}", details)
    try:
        records = load_records(
            config.device.data_dir,
            default_tier=config.device.default_tier,
            allowed_tiers=set(config.tiers.policies),
        )
        dataset = LocalDataset.from_records(
            records,
            tokenizer,
            seq_len=seq_len,
            tier=task.tier,
            eval_fraction=config.device.eval_fraction,
            seed=config.device.data_seed,
        )
    except NoLocalDataError as exc:
        return Skip(f"no local data: {exc}", details)
    except (ConfigError, OSError) as exc:
        return Skip(f"local data unusable: {exc}", details)
    details["train_rows"] = dataset.num_train_rows
    return Ready(dataset, round_epsilon, details)
