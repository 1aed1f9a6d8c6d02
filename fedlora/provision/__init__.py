"""`fedlora provision`: fleet CA, TLS certificates, Ed25519 identities, mosquitto configs, node bundles.

Layout of the output directory and the operator's runbook: docs/provisioning.md.
"""

from __future__ import annotations
