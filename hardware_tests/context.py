"""What the checks look at: the device config (optional), the filesystem roots, the clock.

The roots of /proc, /sys and /etc are fields so unit tests can point every hardware check at a fake tree.
The trainer is built once, lazily, and shared by the checks that need one (building it loads the model).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the device runtime is imported only when a config is loaded
    from edge_runtime.agent.config import DeviceConfig
    from edge_runtime.trainer.base import Trainer

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("/opt/fedlora/etc/device.toml")  # install.sh's default prefix


@dataclass(frozen=True)
class SystemRoots:
    """Where the kernel and OS files are read (`/proc`, `/sys`, `/etc`); tests pass a fake tree."""

    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    etc: Path = Path("/etc")

    @property
    def thermal(self) -> Path:
        """Thermal zones (`thermal_zone*/temp`, millidegrees Celsius)."""
        return self.sys / "class" / "thermal"

    @property
    def cpu(self) -> Path:
        """Per-CPU directories (`cpu*/cpufreq/scaling_governor`)."""
        return self.sys / "devices" / "system" / "cpu"

    @property
    def device_tree_model(self) -> Path:
        """Board name on device-tree machines (Jetson, Raspberry Pi), NUL-terminated."""
        return self.proc / "device-tree" / "model"


@dataclass
class DiagContext:
    """Inputs shared by all checks. `config` is None when no config was given (or it failed to load)."""

    config_path: Path | None = None
    config: DeviceConfig | None = None
    config_error: str | None = None
    roots: SystemRoots = field(default_factory=SystemRoots)
    clock: Callable[[], float] = time.time
    broker_timeout_s: float = 5.0
    benchmark_steps: int = 5
    _trainer: Any = None
    _trainer_error: str | None = None

    @classmethod
    def from_config_path(cls, path: Path | None, **kwargs: Any) -> DiagContext:
        """Load the device config at `path` (None: no config); a bad config is kept as `config_error`."""
        ctx = cls(config_path=path, **kwargs)
        if path is None:
            return ctx
        try:
            from edge_runtime.agent.config import load_device_config

            ctx.config = load_device_config(path)
        except Exception as exc:  # noqa: BLE001 - reported by the `config` check, never a crash
            ctx.config_error = f"{type(exc).__name__}: {exc}"
        return ctx

    def trainer(self) -> Trainer:
        """The bundle's trainer on the configured backend, built once (RuntimeError: why it cannot be)."""
        if self._trainer is None and self._trainer_error is None:
            assert self.config is not None, "trainer() needs a loaded config"
            from edge_runtime.trainer.select import create_trainer

            try:
                self._trainer = create_trainer(
                    self.config.device.bundle_dir,
                    backend=self.config.device.backend,
                    device=self.config.device.compute_device,
                    spinning=self.config.device.thread_spinning,
                )
            except Exception as exc:  # noqa: BLE001 - remembered so every check reports the same cause
                self._trainer_error = f"{type(exc).__name__}: {exc}"
        if self._trainer is None:
            raise RuntimeError(self._trainer_error)
        return self._trainer

    def close(self) -> None:
        """Release the trainer's native sessions."""
        if self._trainer is not None:
            self._trainer.close()
            self._trainer = None
