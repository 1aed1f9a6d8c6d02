"""The device agent (`fedlora device`): takes part in federated rounds over MQTT (docs/device.md).

Modules: `config` (device.toml), `gates` (thermal/memory/battery), `state` (persisted round state and
residual), `round` (one round's pure state machine), `participation` (should we join a round),
`encode` (update + DP noise share), `worker` (training thread), `status`, `agent` (the wiring).
Importing this package loads neither paho nor onnxruntime; `agent` does.
"""

from __future__ import annotations
