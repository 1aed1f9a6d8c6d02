"""What the cloud hears about its open round besides partials: gateway aborts and device sit-outs.

A gateway that aborts its cohort publishes a signed `Abort` on `round/{r}/abort/{gw}` (bridged to the
cloud broker like the partial); the cloud closes the round as soon as every registered gateway sent a
partial or an abort, instead of waiting for the `partial` deadline. Devices that decide not to take part
publish `Status(state="skipped", reason, details={"round": r})`; when every device of the fleet sat out
the open round, nothing can come of it and the cloud closes it at once, logging the reasons.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Collection, Iterable
from pathlib import Path

logger = logging.getLogger(__name__)


def fleet_devices(fleet_keys_file: Path, gateways: Iterable[str]) -> frozenset[str]:
    """Ids of the devices of `gateways` in fleet_keys.json (empty if the file cannot be read: the
    sit-out shortcut is then off, nothing else depends on it)."""
    wanted = set(gateways)
    try:
        nodes = json.loads(Path(fleet_keys_file).read_text(encoding="utf-8"))["nodes"]
        return frozenset(
            node
            for node, entry in nodes.items()
            if entry.get("role") == "device" and entry.get("gateway") in wanted
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning("cannot list the fleet's devices from %s (%s)", fleet_keys_file, exc)
        return frozenset()


class RoundWatch:
    """Gateway aborts and device sit-outs of one round (`round_id`)."""

    def __init__(self, round_id: int, gateways: Collection[str], devices: Collection[str]) -> None:
        self.round_id = round_id
        self.gateways = frozenset(gateways)
        self.devices = frozenset(devices)
        self.aborts: dict[str, str] = {}  # gateway -> reason
        self.sat_out: dict[str, str] = {}  # device -> reason

    def gateway_aborted(self, gateway: str, reason: str) -> bool:
        """Record `gateway`'s abort; False if it was already recorded (a re-delivered frame)."""
        if gateway in self.aborts:
            return False
        self.aborts[gateway] = reason
        return True

    def device_sat_out(self, device: str, reason: str) -> bool:
        """Record that `device` sits this round out; False if already recorded."""
        if device in self.sat_out:
            return False
        self.sat_out[device] = reason
        return True

    def answered(self, partials: Collection[str]) -> bool:
        """True once every registered gateway sent a partial or an abort."""
        return self.gateways <= set(partials) | set(self.aborts)

    def everyone_sat_out(self) -> bool:
        """True when every device of the fleet (known from fleet_keys.json) sat this round out."""
        return bool(self.devices) and self.devices <= set(self.sat_out)

    def sit_out_summary(self) -> str:
        """The sit-out reasons, most frequent first: `3 × no local records of tier 'public'`."""
        counts = Counter(self.sat_out.values())
        return "; ".join(f"{n} × {reason or '(no reason given)'}" for reason, n in counts.most_common())
