"""The suite's shared test kit: factories importable from any test, fixtures in tests/conftest.py.

- `tests.kit.tasks`: round tasks and codec settings (one builder, `round_task`, plus named variants).
- `tests.kit.fleet`: deterministic node identities and keys, fleet_keys.json, a manual clock.
- `tests.kit.secagg_round`: device updates and an in-memory SecAgg+ round (real clients, no broker).
- `tests.kit.gateway`: a `Gateway` under test whose publish is a list.
- `tests.kit.bundles`: model bundles (tiny-llama export, a vector-only bundle for the cloud).
- `tests.kit.waits`: event-driven waits (`wait_until`) and bounded silence checks (`assert_nothing_within`).
- `tests.kit.mqtt`: `wait_subscribed`, the proof that a connection's subscriptions are active.

Unit tests import from here, never from tests/integration; the real mosquitto broker is started by
tests/integration/mosquitto_fixture.py (fixtures in tests/integration/conftest.py).
"""
