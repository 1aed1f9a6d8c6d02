"""The gateway role: secure aggregation of a cohort of devices, published as a signed partial to the cloud.

Modules: `config` (gateway.toml), `robust` (robust statistics, shared with the cloud), `store` (SQLite
round log), `cohort` (one cohort's SecAgg+ round), `rounds` (a round: cohort or groups, decode, partial),
`gateway` (MQTT wiring on the event loop).
"""
