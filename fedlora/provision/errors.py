"""Errors raised by the provisioning package (all `FedloraError`s, so the CLI reports them cleanly)."""

from __future__ import annotations

from fl_protocol.errors import ConfigError, FedloraError


class ProvisionError(FedloraError):
    """Provisioning cannot proceed: output directory state, CA material missing, unknown node."""


class ProvisionConfigError(ConfigError, ProvisionError):
    """A provisioning argument is invalid (bad name, zero devices, duplicate ids)."""
