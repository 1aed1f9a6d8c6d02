"""What a device remembers across restarts: its round state and its error-feedback residual (0600, atomic).

Policy on restart (docs/device.md, "Persistence"): SecAgg keys live only in memory, so a round the
device had joined (advertised) when it stopped is WITHDRAWN, never resumed: the device does not
re-advertise, re-train or re-mask it and answers none of its stages. A masked update that was handed to
the outbox survives in the outbox and is re-sent byte for byte if the broker never acknowledged it; the
ledger charge survives in the ledger. `last_round` makes the retained task of that round a no-op.

The persisted `phase` is the device round machine's state (`round_machine.Phase`) at its durable
checkpoints; the strings of earlier files are the same states, so they read unchanged.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge_runtime.agent.round_machine import TERMINAL, UPLOADED_PHASES, Phase
from fl_protocol.atomic_file import write_atomic
from fl_protocol.errors import ConfigError

logger = logging.getLogger(__name__)

STATE_FORMAT = "fedlora-device-state"
STATE_VERSION = 1
STATE_FILE = "round_state.json"
RESIDUAL_FILE = "residual.npy"
LEDGER_FILE = "ledger.json"
OUTBOX_DIR = "outbox"


@dataclass(frozen=True)
class DecidedRound:
    """The persisted state of the round the device last decided on."""

    round_id: int
    phase: Phase
    reason: str = ""


class DeviceState:
    """`round_state.json` and `residual.npy` in the device's state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._path = self.state_dir / STATE_FILE
        self.record: DecidedRound | None = self._load()

    @property
    def last_round(self) -> int:
        """Highest round id the device decided on (joined, skipped or withdrew); -1 if none."""
        return -1 if self.record is None else self.record.round_id

    def set(self, round_id: int, phase: Phase, reason: str = "") -> None:
        """Record the phase of `round_id` durably (atomic rename, fsync, 0600)."""
        self.record = DecidedRound(int(round_id), Phase(phase), reason)
        doc = {"format": STATE_FORMAT, "version": STATE_VERSION, **asdict(self.record)}
        doc["phase"] = self.record.phase.value
        write_atomic(self._path, json.dumps(doc, sort_keys=True).encode())

    def withdraw_interrupted(self) -> DecidedRound | None:
        """On start: a round left in a non-terminal phase is withdrawn (see module doc); returns it."""
        record = self.record
        if record is None or record.phase in TERMINAL:
            return None
        uploaded = record.phase in UPLOADED_PHASES
        reason = (
            "restarted after upload; outbox re-sends the same update" if uploaded else "restarted mid-round"
        )
        self.set(record.round_id, Phase.WITHDRAWN, reason)
        logger.warning("round %d: withdrawn after restart (was %s)", record.round_id, record.phase.value)
        return record

    def load_residual(self, length: int) -> np.ndarray | None:
        """The error-feedback residual of the last round, or None if absent or of another length."""
        path = self.state_dir / RESIDUAL_FILE
        try:
            residual = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("residual file unreadable (%s); starting without error feedback this round", exc)
            return None
        if residual.dtype != np.float32 or residual.shape != (length,) or not np.isfinite(residual).all():
            logger.warning("residual file does not match the model (%s); ignoring it", residual.shape)
            return None
        return residual

    def save_residual(self, residual: np.ndarray | None) -> None:
        """Persist the residual for the next round (None removes it)."""
        path = self.state_dir / RESIDUAL_FILE
        if residual is None:
            path.unlink(missing_ok=True)
            return
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(residual, dtype=np.float32), allow_pickle=False)
        write_atomic(path, buffer.getvalue())

    def _load(self) -> DecidedRound | None:
        if not self._path.exists():
            return None
        try:
            doc = json.loads(self._path.read_text())
            if doc.get("format") != STATE_FORMAT or doc.get("version") != STATE_VERSION:
                raise ValueError("unknown state format")
            return DecidedRound(int(doc["round_id"]), Phase(doc["phase"]), str(doc.get("reason", "")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Guessing "no round" could make the device re-join a round it already masked for.
            raise ConfigError(f"device state {self._path} is unreadable ({exc}); refusing to start") from exc


def write_plain_update(directory: Path, round_id: int, node_id: str, ring_values: np.ndarray) -> None:
    """Test hook ([debug] plain_updates_dir): the pre-mask ring values as `round-{r}-{node}.npy` (uint32).

    This defeats secure aggregation for this device; the config loader refuses it without
    FEDLORA_TEST_HOOKS=1.
    """
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(ring_values, dtype=np.uint32), allow_pickle=False)
    write_atomic(Path(directory) / f"round-{round_id}-{node_id}.npy", buffer.getvalue())
