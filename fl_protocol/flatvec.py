"""On-disk format of a flat LoRA vector: a one-tensor safetensors file, written without torch.

Devices, gateways and the cloud hold the trainable LoRA parameters as one float32 vector in the bundle
manifest's canonical order. On disk it is a standard safetensors file (readable by the `safetensors`
library) holding the tensor `lora_vector` (F32, shape [N]) and string metadata:

- `format`: "fedlora-flat-v1"
- `bundle_id`: the bundle's id (see `fl_protocol.manifest.bundle_id`), so a vector is never applied to the
  wrong bundle
- `model_version`: integer version as a string ("0" for the export's initial vector)

Layout (safetensors): 8-byte little-endian header length, JSON header, raw little-endian data.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fl_protocol.atomic_file import PUBLIC_MODE, write_atomic
from fl_protocol.errors import DecodeError

FORMAT = "fedlora-flat-v1"
TENSOR_NAME = "lora_vector"
_MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class FlatVector:
    """A flat trainable vector with the provenance needed to apply it safely."""

    values: np.ndarray  # float32 [N]
    bundle_id: str
    model_version: int


def save_flat_vector(path: Path, vector: FlatVector) -> None:
    """Write `vector` atomically so a crash never leaves a half-written file."""
    values = np.ascontiguousarray(vector.values, dtype="<f4").reshape(-1)
    header = {
        TENSOR_NAME: {"dtype": "F32", "shape": [int(values.size)], "data_offsets": [0, int(values.nbytes)]},
        "__metadata__": {
            "format": FORMAT,
            "bundle_id": vector.bundle_id,
            "model_version": str(int(vector.model_version)),
        },
    }
    header_bytes = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)  # safetensors aligns the data start to 8 bytes
    data = struct.pack("<Q", len(header_bytes)) + header_bytes + values.tobytes()
    write_atomic(Path(path), data, mode=PUBLIC_MODE)


def load_flat_vector(path: Path, *, expected_bundle_id: str | None = None) -> FlatVector:
    """Read a flat vector file; raise DecodeError if it is malformed or belongs to another bundle."""
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise DecodeError("flat vector file too short")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > _MAX_HEADER_BYTES or 8 + header_len > len(data):
        raise DecodeError("flat vector header length out of range")
    try:
        header = json.loads(data[8 : 8 + header_len])
        meta = header["__metadata__"]
        info = header[TENSOR_NAME]
        start, end = (int(x) for x in info["data_offsets"])
        (count,) = (int(x) for x in info["shape"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DecodeError("flat vector header malformed") from exc
    body = data[8 + header_len :]
    if meta.get("format") != FORMAT or info.get("dtype") != "F32":
        raise DecodeError("not a fedlora flat vector")
    if start != 0 or end != count * 4 or end != len(body):
        raise DecodeError("flat vector data size does not match its header")
    if expected_bundle_id is not None and meta.get("bundle_id") != expected_bundle_id:
        raise DecodeError("flat vector belongs to a different bundle (bundle id mismatch)")
    values = np.frombuffer(body, dtype="<f4").astype(np.float32)
    return FlatVector(values, str(meta["bundle_id"]), int(meta["model_version"]))
