"""Error hierarchy shared by every fedlora package.

`FedloraError` is the root: the CLI turns any of its subclasses into a one-line message and exit code 1.
Decoding and verification failures are deliberately opaque (`DecodeError`) so a peer learns nothing about
which check failed; the reason goes to the local log only.
"""

from __future__ import annotations


class FedloraError(Exception):
    """Root of every error fedlora raises on purpose (as opposed to bugs).

    exit_code: what `fedlora ROLE` exits with when this error ends the command (1 unless a subclass says).
    """

    exit_code = 1


class ConfigError(FedloraError):
    """A configuration file or argument is invalid; the message says which field and why."""


class DecodeError(FedloraError):
    """A frame, payload or key failed to decode or verify. Intentionally carries no detail."""

    def __init__(self, message: str = "invalid message") -> None:
        super().__init__(message)


class ProtocolError(FedloraError):
    """A peer (or this node) broke the protocol: wrong stage, wrong round, inconsistent sets."""


class RoleFault(FedloraError):
    """A role's own code or I/O failed while handling a message or a tick (docs/failure-policy.md).

    Fatal for the process by design: the role's event loop stops and the command exits with
    `EXIT_ROLE_FAULT` (70, EX_SOFTWARE) so systemd or the demo's supervisor restarts it from durable state,
    instead of running on with half-applied state. Bad input from peers is never a RoleFault: it is a
    DecodeError or ProtocolError, rejected with one log line.
    """

    exit_code = 70


EXIT_ROLE_FAULT = RoleFault.exit_code


class PrivacyError(FedloraError):
    """A privacy rule would be broken (budget exhausted, settings below a tier minimum)."""
