"""Errors raised by the device runtime (edge_runtime).

Everything derives from `fl_protocol.errors.FedloraError`, so the CLI reports any of them as a one-line
message with exit code 1. The device agent catches the specific ones it can recover from: for example
`NoLocalDataError` means "sit this round out", not "crash".
"""

from __future__ import annotations

from fl_protocol.errors import ConfigError, FedloraError, PrivacyError

__all__ = ["ConfigError", "EdgeRuntimeError", "NoLocalDataError", "PrivacyError"]


class EdgeRuntimeError(FedloraError):
    """Root of the errors specific to the device runtime."""


class NoLocalDataError(EdgeRuntimeError):
    """The device has no usable training data for this round (missing, empty, unreadable, or no record
    of the round's tier). The agent skips the round; the message says which directory and why."""
