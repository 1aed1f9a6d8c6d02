"""The cloud role (`fedlora cloud`): round scheduler, root aggregator, server optimizer, model store,
privacy accountant and status page. See docs/cloud.md.

Modules: `config` (cloud.toml), `store` (versioned model store), `optimizer` (FedAvg/FedAdam/FedYogi),
`combine` (partials -> mean update), `privacy` (noise resolution + accountant), `records` (per-round
records), `coordinator` (the round state machine), `status_page` (HTTP dashboard, /metrics, /api/rounds).
"""
