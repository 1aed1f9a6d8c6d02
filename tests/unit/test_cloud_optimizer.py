"""Server optimizers: FedAvg with η=1 is plain averaging; FedAdam/FedYogi follow Reddi et al. 2021, Alg. 2."""

from __future__ import annotations

import math

import numpy as np

from aggregator_gateway.cloud.config import OptimizerSection
from aggregator_gateway.cloud.optimizer import FedAdam, FedAvg, FedYogi, make_optimizer


def test_fedavg_with_server_lr_1_is_plain_averaging() -> None:
    model = np.array([1.0, -2.0, 0.5])
    local_models = np.array([[1.5, -2.0, 0.0], [0.5, -1.0, 1.0], [1.0, -3.0, 0.5]])
    mean_update = (local_models - model).mean(axis=0)
    assert np.allclose(FedAvg(1.0).step(model, mean_update), local_models.mean(axis=0))


def test_fedavg_server_lr_scales_the_step() -> None:
    assert np.allclose(FedAvg(0.5).step(np.array([1.0]), np.array([2.0])), [2.0])


# Hand-computed two steps, β1=0.9, β2=0.99, τ=0.1, η=1, x0=[1, 0], Δ1=[0.5, 0.01], Δ2=[-0.2, 0.01].
# m0 = 0, v0 = τ² = 0.01. Coordinate 0 has Δ² > v (Yogi's v grows), coordinate 1 Δ² < v (v shrinks).
X0 = np.array([1.0, 0.0])
D1, D2 = np.array([0.5, 0.01]), np.array([-0.2, 0.01])


def _run(optimizer: FedAdam | FedYogi) -> tuple[np.ndarray, np.ndarray]:
    x1 = optimizer.step(X0, D1)
    return x1, optimizer.step(x1, D2)


def test_fedadam_two_steps_by_hand() -> None:
    x1, x2 = _run(FedAdam(server_lr=1.0, beta1=0.9, beta2=0.99, tau=0.1))
    # coordinate 0: m1 = 0.05, v1 = 0.99*0.01 + 0.01*0.25 = 0.0124; m2 = 0.045 - 0.02 = 0.025,
    # v2 = 0.99*0.0124 + 0.01*0.04 = 0.012676
    e1 = 1.0 + 0.05 / (math.sqrt(0.0124) + 0.1)
    e2 = e1 + 0.025 / (math.sqrt(0.012676) + 0.1)
    # coordinate 1: m1 = 0.001, v1 = 0.0099 + 0.000001 = 0.009901; m2 = 0.0009 + 0.001 = 0.0019,
    # v2 = 0.99*0.009901 + 0.000001 = 0.00980299
    f1 = 0.001 / (math.sqrt(0.009901) + 0.1)
    f2 = f1 + 0.0019 / (math.sqrt(0.00980299) + 0.1)
    assert np.allclose(x1, [e1, f1], rtol=1e-12)
    assert np.allclose(x2, [e2, f2], rtol=1e-12)


def test_fedyogi_two_steps_by_hand() -> None:
    x1, x2 = _run(FedYogi(server_lr=1.0, beta1=0.9, beta2=0.99, tau=0.1))
    # coordinate 0: v1 = 0.01 - 0.01*0.25*sign(0.01-0.25) = 0.0125; v2 = 0.0125 + 0.01*0.04 = 0.0129
    e1 = 1.0 + 0.05 / (math.sqrt(0.0125) + 0.1)
    e2 = e1 + 0.025 / (math.sqrt(0.0129) + 0.1)
    # coordinate 1: v1 = 0.01 - 0.01*0.0001 = 0.009999; v2 = 0.009999 - 0.000001 = 0.009998
    f1 = 0.001 / (math.sqrt(0.009999) + 0.1)
    f2 = f1 + 0.0019 / (math.sqrt(0.009998) + 0.1)
    assert np.allclose(x1, [e1, f1], rtol=1e-12)
    assert np.allclose(x2, [e2, f2], rtol=1e-12)


def test_state_round_trip_continues_identically() -> None:
    first = FedAdam(server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    x1 = first.step(X0, D1)
    second = FedAdam(server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    second.load_state(first.state())
    assert np.array_equal(first.step(x1, D2), second.step(x1, D2))


def test_make_optimizer_picks_by_name() -> None:
    assert isinstance(make_optimizer(OptimizerSection(name="fedavg")), FedAvg)
    assert isinstance(make_optimizer(OptimizerSection(name="fedadam", server_lr=0.01)), FedAdam)
    assert isinstance(make_optimizer(OptimizerSection(name="fedyogi", server_lr=0.01)), FedYogi)
