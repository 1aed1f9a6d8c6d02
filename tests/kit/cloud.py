"""The directory a cloud under test runs from (`fedlora cloud --config <root>/cloud.toml`): fleet keys,
the cloud's signing key, a vector-only bundle and the config file, against a broker on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.kit.bundles import write_vector_bundle
from tests.kit.fleet import CLOUD, Role, write_fleet

HOST = "127.0.0.1"


def cloud_config(*, fleet: str, port: int, cloud: str, extra: str = "") -> str:
    """cloud.toml text: node CLOUD of `fleet`, the broker at 127.0.0.1:`port`, the identity files
    `write_cloud_dir` writes, `[cloud]` with bundle_dir "bundle" and store_dir "store" plus the `cloud`
    lines (TOML, one key per line), then `extra` verbatim (e.g. `[cloud.stage_timeouts_s]`, `[privacy]`)."""
    return (
        f'[node]\nid = "{CLOUD}"\nrole = "cloud"\nfleet = "{fleet}"\n'
        f'[broker]\nhost = "{HOST}"\nport = {port}\n'
        '[identity]\nsigning_key_file = "signing.key"\nfleet_keys_file = "fleet_keys.json"\n'
        f'[cloud]\nbundle_dir = "bundle"\nstore_dir = "store"\n{cloud.strip()}\n{extra.strip()}\n'
    )


def write_cloud_dir(
    root: Path, *, fleet: str, roles: Mapping[str, Role], initial: np.ndarray, config: str
) -> tuple[Path, dict[str, Ed25519PrivateKey]]:
    """Write into `root`: fleet_keys.json for `roles` (which must include CLOUD), the cloud's signing.key,
    bundle/ holding `initial` (float32, [d]) and cloud.toml with `config` (see `cloud_config`).

    Returns (the config path, every node's private key)."""
    keys = write_fleet(root, roles, fleet=fleet, signer=CLOUD)
    write_vector_bundle(root / "bundle", initial)
    (root / "cloud.toml").write_text(config)
    return root / "cloud.toml", keys
