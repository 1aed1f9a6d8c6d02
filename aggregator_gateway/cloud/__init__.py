"""The cloud role (`fedlora cloud`): round scheduler, root aggregator, server optimizer, model store,
privacy accountant and status page. See docs/cloud.md ("Code layout").

Modules, one job each: `config` (cloud.toml), `lifecycle` (the cloud round state machine), `scheduler`
(round ids, retries, retained model and task), `tasks` (building a RoundTask), `collector` (partials,
gateway aborts, sit-outs, the deadline), `round_watch` (aborts and sit-outs of one round), `combine`
(partials -> mean update), `global_step` (server optimizer, accountant, commit), `optimizer`
(FedAvg/FedAdam/FedYogi), `privacy` (noise resolution + accountant), `store` (versioned model store),
`records` (per-round records), `reporting` (records, statuses, snapshot, report), `final_output`
(final.safetensors, adapter, rounds.json), `coordinator` (wires them), `status_page` (HTTP dashboard,
/metrics, /api/rounds).
"""
