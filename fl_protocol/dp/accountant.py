"""A small RDP accountant: records privacy events, composes them, reports (ε, δ).

The cloud keeps one for the federation (reported per round in report.json); each device keeps one per
sensitivity tier in its ledger. Both persist it as a JSON-able dict (`to_dict` / `from_dict`), which
stores the events, not derived numbers, so a restored accountant recomputes exactly what it had.

Composition is addition of RDP curves (Mironov 2017, Proposition 1); the math lives in `rdp.py`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fl_protocol.dp import rdp
from fl_protocol.errors import ConfigError

logger = logging.getLogger(__name__)

STATE_FORMAT = "fedlora.dp.accountant"
STATE_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class GaussianEvent:
    """One release of the Poisson-subsampled Gaussian mechanism (sample_rate 1: no subsampling)."""

    noise_multiplier: float
    sample_rate: float

    def rdp(self, orders: tuple[float, ...]) -> np.ndarray:
        """RDP curve of one occurrence at `orders`."""
        return rdp.subsampled_gaussian_rdp(
            noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate, orders=orders
        )


@dataclass(frozen=True, kw_only=True)
class SkellamEvent:
    """One release of the Skellam mechanism in the integer domain, optionally Poisson-subsampled."""

    variance: float
    l1_sensitivity: float
    l2_sensitivity: float
    sample_rate: float

    def rdp(self, orders: tuple[float, ...]) -> np.ndarray:
        """RDP curve of one occurrence at `orders` (+inf at fractional orders)."""
        plain = rdp.skellam_rdp(
            variance=self.variance,
            l1_sensitivity=self.l1_sensitivity,
            l2_sensitivity=self.l2_sensitivity,
            orders=orders,
        )
        if self.sample_rate == 1.0:
            return plain

        def curve(at_orders: Sequence[float]) -> np.ndarray:
            return rdp.skellam_rdp(
                variance=self.variance,
                l1_sensitivity=self.l1_sensitivity,
                l2_sensitivity=self.l2_sensitivity,
                orders=at_orders,
            )

        return rdp.poisson_subsampled_rdp(curve, sample_rate=self.sample_rate, orders=orders)


@dataclass(frozen=True, kw_only=True)
class DiscreteGaussianEvent:
    """One release of the distributed discrete Gaussian ([KLS21], `rdp.distributed_discrete_gaussian_rdp`):
    at least `min_summands` devices each add N_Z(0, local_stddev²) per coordinate (integer units) to a
    conditionally rounded update of L2 sensitivity `l2_sensitivity` and length `dim`. No subsampling."""

    local_stddev: float
    min_summands: int
    l2_sensitivity: float
    dim: int

    def rdp(self, orders: tuple[float, ...]) -> np.ndarray:
        """RDP curve of one occurrence at `orders`."""
        return rdp.distributed_discrete_gaussian_rdp(
            local_stddev=self.local_stddev,
            min_summands=self.min_summands,
            l2_sensitivity=self.l2_sensitivity,
            dim=self.dim,
            orders=orders,
        )


PrivacyEvent = GaussianEvent | SkellamEvent | DiscreteGaussianEvent
_FIELDS: dict[str, tuple[type, tuple[str, ...]]] = {
    "gaussian": (GaussianEvent, ("noise_multiplier", "sample_rate")),
    "skellam": (SkellamEvent, ("variance", "l1_sensitivity", "l2_sensitivity", "sample_rate")),
    "ddgauss": (DiscreteGaussianEvent, ("local_stddev", "min_summands", "l2_sensitivity", "dim")),
}
_INT_FIELDS = frozenset({"min_summands", "dim"})


def event_mechanism(event: PrivacyEvent) -> str:
    """The state name of an event's mechanism ('gaussian', 'skellam' or 'ddgauss')."""
    for name, (kind, _) in _FIELDS.items():
        if isinstance(event, kind):
            return name
    raise ConfigError(f"unknown privacy event {event!r}")


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an int >= 1, got {steps!r}")


def _check_rate(sample_rate: float) -> None:
    if not (math.isfinite(sample_rate) and 0.0 <= sample_rate <= 1.0):
        raise ConfigError(f"sample_rate must lie in [0, 1], got {sample_rate!r}")


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


class RdpAccountant:
    """Records DP events (with repetition counts) and reports the composed (ε, δ)."""

    def __init__(self, *, orders: tuple[float, ...] | list[float] = rdp.DEFAULT_ORDERS) -> None:
        rdp._orders_array(orders)  # validates
        self._orders: tuple[float, ...] = tuple(float(a) for a in orders)
        self._events: list[tuple[PrivacyEvent, int]] = []
        self._cache: dict[PrivacyEvent, np.ndarray] = {}

    @property
    def orders(self) -> tuple[float, ...]:
        """The Rényi orders this accountant evaluates."""
        return self._orders

    @property
    def events(self) -> tuple[tuple[PrivacyEvent, int], ...]:
        """Recorded (event, count) pairs in order; consecutive equal events are merged."""
        return tuple(self._events)

    @property
    def steps(self) -> int:
        """Total number of recorded releases."""
        return sum(count for _, count in self._events)

    def step(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Record `steps` releases of the Gaussian mechanism with Poisson sampling of devices.

        For DP-FedAvg `noise_multiplier` = (std of the summed noise) / clip norm and `sample_rate` =
        probability that a device takes part in a round.
        """
        _check_positive("noise_multiplier", noise_multiplier)
        _check_rate(sample_rate)
        self._record(
            GaussianEvent(noise_multiplier=float(noise_multiplier), sample_rate=float(sample_rate)), steps
        )

    def step_skellam(
        self,
        *,
        variance: float,
        l1_sensitivity: float,
        l2_sensitivity: float,
        sample_rate: float = 1.0,
        steps: int = 1,
    ) -> None:
        """Record `steps` releases of the Skellam mechanism (integer units; see rdp.skellam_rdp)."""
        for name, value in (("variance", variance), ("l1", l1_sensitivity), ("l2", l2_sensitivity)):
            _check_positive(name, value)
        _check_rate(sample_rate)
        event = SkellamEvent(
            variance=float(variance),
            l1_sensitivity=float(l1_sensitivity),
            l2_sensitivity=float(l2_sensitivity),
            sample_rate=float(sample_rate),
        )
        self._record(event, steps)

    def step_discrete_gaussian(
        self, *, local_stddev: float, min_summands: int, l2_sensitivity: float, dim: int, steps: int = 1
    ) -> None:
        """Record `steps` releases of the distributed discrete Gaussian (see DiscreteGaussianEvent)."""
        _check_positive("local_stddev", local_stddev)
        _check_positive("l2_sensitivity", l2_sensitivity)
        for name, value in (("min_summands", min_summands), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        event = DiscreteGaussianEvent(
            local_stddev=float(local_stddev),
            min_summands=int(min_summands),
            l2_sensitivity=float(l2_sensitivity),
            dim=int(dim),
        )
        self._record(event, steps)

    def record(self, event: PrivacyEvent, steps: int = 1) -> None:
        """Record `steps` occurrences of an already built event (validated as by its step method)."""
        fields = {name: getattr(event, name) for name in _FIELDS[event_mechanism(event)][1]}
        self._restore_event({"mechanism": event_mechanism(event), **fields, "count": steps})

    def epsilon_after_event(self, event: PrivacyEvent, *, delta: float, steps: int = 1) -> float:
        """ε that `record(event, steps)` would lead to, without recording anything."""
        preview = self.copy()
        preview.record(event, steps)
        return preview.get_epsilon(delta=delta)

    def _record(self, event: PrivacyEvent, steps: int) -> None:
        _check_steps(steps)
        if self._events and self._events[-1][0] == event:
            self._events[-1] = (event, self._events[-1][1] + steps)
        else:
            self._events.append((event, steps))

    def _event_rdp(self, event: PrivacyEvent) -> np.ndarray:
        if event not in self._cache:
            self._cache[event] = event.rdp(self._orders)
        return self._cache[event]

    def rdp(self) -> np.ndarray:
        """Composed RDP curve of every recorded event (one value per order)."""
        total = np.zeros(len(self._orders))
        for event, count in self._events:
            total = total + count * self._event_rdp(event)
        return total

    def get_privacy_spent(self, *, delta: float) -> tuple[float, float]:
        """(ε, best order) such that everything recorded so far is (ε, δ)-DP."""
        return rdp.rdp_to_epsilon(self.rdp(), delta=delta, orders=self._orders)

    def get_epsilon(self, *, delta: float) -> float:
        """ε such that everything recorded so far is (ε, δ)-DP."""
        return self.get_privacy_spent(delta=delta)[0]

    def epsilon_after(
        self, *, delta: float, noise_multiplier: float, sample_rate: float, steps: int = 1
    ) -> float:
        """ε that `step(...)` with these settings would lead to, without recording anything."""
        preview = self.copy()
        preview.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
        return preview.get_epsilon(delta=delta)

    def copy(self) -> RdpAccountant:
        """Independent copy (shares the immutable per-event RDP cache entries)."""
        other = RdpAccountant(orders=self._orders)
        other._events = list(self._events)
        other._cache = dict(self._cache)
        return other

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state: format tag, version, orders and events (not derived numbers)."""
        events = []
        for event, count in self._events:
            mechanism = event_mechanism(event)
            fields = {name: getattr(event, name) for name in _FIELDS[mechanism][1]}
            events.append({"mechanism": mechanism, **fields, "count": count})
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "orders": list(self._orders),
            "events": events,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> RdpAccountant:
        """Rebuild an accountant from `to_dict` output; any malformed field raises ConfigError."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ConfigError("accountant state: missing or wrong 'format'")
        if state.get("version") != STATE_VERSION:
            raise ConfigError(f"accountant state: unsupported version {state.get('version')!r}")
        unknown = set(state) - {"format", "version", "orders", "events"}
        if unknown:
            raise ConfigError(f"accountant state: unknown keys {sorted(unknown)}")
        orders = state.get("orders")
        if not isinstance(orders, list) or not all(_is_number(a) for a in orders):
            raise ConfigError("accountant state: 'orders' must be a list of numbers")
        accountant = cls(orders=[float(a) for a in orders])
        events = state.get("events")
        if not isinstance(events, list):
            raise ConfigError("accountant state: 'events' must be a list")
        for item in events:
            accountant._restore_event(item)
        return accountant

    def _restore_event(self, item: Any) -> None:
        if not isinstance(item, dict) or item.get("mechanism") not in _FIELDS:
            raise ConfigError("accountant state: event without a known 'mechanism'")
        mechanism = item["mechanism"]
        names = _FIELDS[mechanism][1]
        if set(item) != {"mechanism", "count", *names}:
            raise ConfigError(f"accountant state: {mechanism} event needs exactly {sorted(names)} and count")
        if not all(_is_number(item[name]) for name in names):
            raise ConfigError(f"accountant state: {mechanism} event has a non-numeric field")
        if any(not isinstance(item[name], int) for name in names if name in _INT_FIELDS):
            raise ConfigError(f"accountant state: {mechanism} event has a non-integer count field")
        count = item["count"]
        values = {name: item[name] for name in names}
        if mechanism == "gaussian":
            self.step(**values, steps=count)
        elif mechanism == "skellam":
            self.step_skellam(**values, steps=count)
        else:
            self.step_discrete_gaussian(**values, steps=count)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
