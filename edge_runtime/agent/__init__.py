"""The device agent (`fedlora device`): takes part in federated rounds over MQTT (docs/device.md).

Modules: `config` (device.toml), `gates` (thermal/memory/battery), `state` (persisted round state and
residual), `round_machine` (the round's states, events and transition tables), `round_api` (actions and
the `RoundVariant` protocol), `round` (a SecAgg+ round), `trusted_round` (a trusted-gateway round),
`participation` (should we join a round), `models` (global versions held, deltas applied, full models
fetched), `intake` (waiting for the model, joining), `inbound` (decoding what the device hears),
`encode` (update + DP noise share), `worker` (training thread), `status`, `agent` (the wiring).
Importing this package loads neither paho nor onnxruntime; `agent` does.
"""

from __future__ import annotations
