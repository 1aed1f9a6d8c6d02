"""`fedlora simulate`: N virtual devices behind G gateways through the real code paths, in one process.

One concept per module: `config` (TOML + flags, checks), `network` (device profiles, fleet mixes, round
timing), `executor` (who trains the devices), `ray_executor` (the same training on Ray workers), `cohort`
(one gateway's SecAgg+ round in memory), `rounds` (one round: select, train, encode, aggregate, global
step), `run` (the simulation), `report` (table, report.json, plot), `cli` (the command). See
docs/simulate.md.
"""
