"""Errors of the export toolchain."""

from __future__ import annotations

from fl_protocol.errors import FedloraError


class ExportError(FedloraError):
    """The model cannot be exported: bad path, unsupported architecture, targets not found, no disk."""
