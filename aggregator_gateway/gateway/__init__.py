"""The gateway role: secure aggregation of a cohort of devices, published as a signed partial to the cloud.

Modules: `config` (gateway.toml), `robust` (robust statistics, shared with the cloud), `store` (SQLite
round log), `lifecycle` (the round's state machine), `driver` (the Protocol both round drivers implement),
`cohort` (one cohort's SecAgg+ round), `rounds` (a round: cohort or groups, decode, partial), `trusted`
(a trusted-mode round), `gateway` (MQTT wiring on the event loop).
"""
