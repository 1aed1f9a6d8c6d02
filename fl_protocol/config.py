"""Strict TOML configuration: frozen dataclasses, unknown keys are an error, types checked.

Every role (device, gateway, cloud) reads a `config.toml` whose `[node]`, `[broker]` and `[identity]`
sections are written by `fedlora provision`; role-specific sections are declared by each role with
`section_from_table`. Paths are relative to the config file's directory unless absolute, so a node's
provisioned directory can be copied anywhere. A section that renamed a key lists it in `RENAMED_KEYS`
(old -> new): the old key is still read for one release, with a deprecation warning in the log
(docs/operations.md, "Upgrading").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fl_protocol.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 devices
    import tomli as tomllib

logger = logging.getLogger(__name__)

T = TypeVar("T")
_SCALARS = (str, int, float, bool)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning every failure into a ConfigError that names the file."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _coerce(where: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(where, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a valid {annotation}")
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_type, _ellipsis) = typing.get_args(annotation)
        return tuple(_coerce(f"{where}[{i}]", v, item_type) for i, v in enumerate(value))
    if annotation is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        return Path(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in _SCALARS:
        if type(value) is not annotation:
            raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {annotation}")  # a bug in a section class


def renamed_keys(cls: type, table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """`table` with the deprecated keys of `cls.RENAMED_KEYS` (old name -> new name) under their new names.

    Each old key found logs a deprecation warning naming both keys; a table that gives both the old and
    the new key raises ConfigError. A class without `RENAMED_KEYS` gets `table` back unchanged (as a dict).
    """
    out = dict(table)
    renamed: Mapping[str, str] = getattr(cls, "RENAMED_KEYS", {})
    for old, new in renamed.items():
        if old not in out:
            continue
        if new in out:
            raise ConfigError(f"[{where}]: give {new} only ({old} is its deprecated name)")
        logger.warning(
            "[%s]: key %s is deprecated and will be removed in the next release; rename it to %s "
            "(same meaning; docs/operations.md, Upgrading)",
            where,
            old,
            new,
        )
        out[new] = out.pop(old)
    return out


def section_from_table(
    cls: type[T], table: Mapping[str, Any] | None, where: str, *, base_dir: Path | None = None
) -> T:
    """Build dataclass `cls` from a TOML table: unknown keys and wrong types raise ConfigError.

    Fields without a default are required. Nested dataclass fields are read from sub-tables. With
    `base_dir` (the config file's directory) every relative Path field is resolved against it, so a
    node's directory can be copied anywhere. Deprecated key names are read as `renamed_keys` says.
    """
    table = renamed_keys(cls, table or {}, where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - names)
    if unknown:
        raise ConfigError(
            f"[{where}]: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}"
        )
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key_where = f"{where}.{f.name}"
        if f.name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"[{where}]: missing required key {f.name}")
            continue
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            values[f.name] = section_from_table(hint, table[f.name], key_where)  # type: ignore[arg-type]
        else:
            values[f.name] = _coerce(key_where, table[f.name], hint)
    try:
        section = cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{where}]: {exc}") from exc
    return section if base_dir is None else _resolved(section, base_dir)


def _resolved(section: T, base_dir: Path) -> T:
    """A copy of `section` with every Path field (defaults and nested sections included) made absolute."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(section):  # type: ignore[arg-type]
        value = getattr(section, f.name)
        if isinstance(value, Path):
            changes[f.name] = resolve(base_dir, value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes[f.name] = _resolved(value, base_dir)
    return dataclasses.replace(section, **changes) if changes else section  # type: ignore[type-var]


def resolve(base_dir: Path, path: Path) -> Path:
    """`path` relative to the config file's directory unless it is absolute."""
    return path if path.is_absolute() else (base_dir / path)


@dataclass(frozen=True)
class NodeSection:
    """[node]: who this node is. Written by `fedlora provision`."""

    id: str
    role: str  # "device" | "gateway" | "cloud"
    fleet: str
    gateway: str | None = None  # devices: the gateway whose cohort they join

    def __post_init__(self) -> None:
        if self.role not in ("device", "gateway", "cloud"):
            raise ValueError(f"role must be device, gateway or cloud, got {self.role!r}")
        if self.role == "device" and not self.gateway:
            raise ValueError("a device must name its gateway")


@dataclass(frozen=True)
class BrokerSection:
    """[broker]: the MQTT broker this node connects to. TLS is used when ca_file is set."""

    host: str = "127.0.0.1"
    port: int = 1883
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 30
    # The broker's max_packet_size, for brokers that cannot tell it (MQTT 3.1.1); MQTT 5 brokers announce it.
    max_packet_bytes: int | None = None
    # "5" (announces the packet limit) or "3.1.1" (e.g. the demo's embedded amqtt broker).
    mqtt_version: str = "5"

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if self.max_packet_bytes is not None and not 8192 <= self.max_packet_bytes <= 268_435_460:
            raise ValueError(f"max_packet_bytes must be in 8192..268435460, got {self.max_packet_bytes}")
        if self.mqtt_version not in ("5", "3.1.1"):
            raise ValueError(f'mqtt_version must be "5" or "3.1.1", got {self.mqtt_version!r}')
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")


@dataclass(frozen=True)
class IdentitySection:
    """[identity]: this node's Ed25519 signing key and the fleet's public key directory."""

    signing_key_file: Path
    fleet_keys_file: Path


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """Load a PEM (PKCS#8) Ed25519 private key; ConfigError if missing or of another type."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot load signing key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key")
    return key


def load_fleet_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """Read fleet_keys.json (node id -> Ed25519 public key hex) into verification keys."""
    try:
        doc = json.loads(Path(path).read_text())
        return {
            node_id: Ed25519PublicKey.from_public_bytes(bytes.fromhex(entry["ed25519_public_key"]))
            for node_id, entry in doc["nodes"].items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"cannot read fleet keys {path}: {exc}") from exc
