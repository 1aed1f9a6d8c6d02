"""Server optimizers applied to the mean client update (Reddi et al., "Adaptive Federated Optimization",
ICLR 2021, Algorithm 2).

The mean update Δ_t is the (weighted) mean of the devices' θ_local − θ_global, i.e. a descent direction
already. With server learning rate η:

    FedAvg:  x_{t+1} = x_t + η Δ_t                                   (η = 1: plain averaging)
    FedAdam: m_t = β1 m_{t-1} + (1 − β1) Δ_t
             v_t = β2 v_{t-1} + (1 − β2) Δ_t²
             x_{t+1} = x_t + η m_t / (sqrt(v_t) + τ)
    FedYogi: as FedAdam but v_t = v_{t-1} − (1 − β2) Δ_t² sign(v_{t-1} − Δ_t²)

As in the paper: m_{-1} = 0, v_{-1} = τ², no bias correction. Arithmetic is float64; the stored model is
float32. State (m, v, step count) is exported with `state()` so the cloud can persist it across restarts.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from aggregator_gateway.cloud.config import OptimizerSection

logger = logging.getLogger(__name__)


class ServerOptimizer(Protocol):
    """Turns (current model, mean update) into the next model."""

    def step(self, model: np.ndarray, mean_update: np.ndarray) -> np.ndarray:
        """Return the next model (float64) from the current model and the mean client update."""
        ...

    def state(self) -> dict[str, np.ndarray]:
        """Moment vectors to persist (empty for stateless optimizers)."""
        ...

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `state()` returned."""
        ...


class FedAvg:
    """x + η Δ: with η = 1 the new model is the plain average of the devices' local models."""

    def __init__(self, server_lr: float = 1.0) -> None:
        self.server_lr = float(server_lr)

    def step(self, model: np.ndarray, mean_update: np.ndarray) -> np.ndarray:
        """See the module docstring."""
        return np.asarray(model, np.float64) + self.server_lr * np.asarray(mean_update, np.float64)

    def state(self) -> dict[str, np.ndarray]:
        """Stateless."""
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Stateless: nothing to restore."""


class _Adaptive:
    """Shared part of FedAdam and FedYogi: first moment, per-coordinate step size."""

    def __init__(self, *, server_lr: float, beta1: float, beta2: float, tau: float) -> None:
        self.server_lr, self.beta1, self.beta2, self.tau = (
            float(server_lr),
            float(beta1),
            float(beta2),
            float(tau),
        )
        self._m: np.ndarray | None = None  # [d] first moment
        self._v: np.ndarray | None = None  # [d] second moment

    def _second_moment(self, v_prev: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def step(self, model: np.ndarray, mean_update: np.ndarray) -> np.ndarray:
        """See the module docstring."""
        x = np.asarray(model, np.float64)
        delta = np.asarray(mean_update, np.float64)
        if self._m is None or self._v is None or self._m.shape != delta.shape:
            self._m = np.zeros_like(delta)
            self._v = np.full_like(delta, self.tau**2)
        self._m = self.beta1 * self._m + (1.0 - self.beta1) * delta
        self._v = self._second_moment(self._v, delta * delta)
        return x + self.server_lr * self._m / (np.sqrt(self._v) + self.tau)

    def state(self) -> dict[str, np.ndarray]:
        """The moment vectors m and v (empty before the first step)."""
        if self._m is None or self._v is None:
            return {}
        return {"m": self._m.copy(), "v": self._v.copy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore m and v (both or neither)."""
        if state:
            self._m = np.asarray(state["m"], np.float64).copy()
            self._v = np.asarray(state["v"], np.float64).copy()


class FedAdam(_Adaptive):
    """Adam-style server optimizer: v_t = β2 v_{t-1} + (1 − β2) Δ²."""

    def _second_moment(self, v_prev: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        return self.beta2 * v_prev + (1.0 - self.beta2) * delta_sq


class FedYogi(_Adaptive):
    """Yogi server optimizer: v_t = v_{t-1} − (1 − β2) Δ² sign(v_{t-1} − Δ²) (additive, slower growth)."""

    def _second_moment(self, v_prev: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        return v_prev - (1.0 - self.beta2) * delta_sq * np.sign(v_prev - delta_sq)


def make_optimizer(section: OptimizerSection) -> ServerOptimizer:
    """The optimizer named in [optimizer]."""
    if section.name == "fedavg":
        return FedAvg(section.server_lr)
    kind = FedAdam if section.name == "fedadam" else FedYogi
    return kind(server_lr=section.server_lr, beta1=section.beta1, beta2=section.beta2, tau=section.tau)
