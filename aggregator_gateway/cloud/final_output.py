"""What a finished run leaves in store_dir: `final.safetensors` (the flat vector of the latest version,
fl_protocol.flatvec), the PEFT adapter `adapter/` and `rounds.json` (docs/cloud.md, "What it does").
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from aggregator_gateway.cloud.store import ModelStore
from fl_protocol.errors import FedloraError
from fl_protocol.flatvec import FlatVector, save_flat_vector

logger = logging.getLogger(__name__)


def write_final_outputs(
    store: ModelStore, *, bundle_id: str, bundle_dir: Path, out_dir: Path, report: dict[str, Any]
) -> None:
    """Write final.safetensors, the adapter (if export.adapter is importable) and rounds.json to out_dir.

    Raises StoreError if the latest version cannot be read, OSError if a file cannot be written.
    """
    info = store.latest()
    assert info is not None, "the store holds at least the initial version"
    out_dir = Path(out_dir)
    save_flat_vector(
        out_dir / "final.safetensors", FlatVector(store.load(info.version), bundle_id, info.version)
    )
    write_final_adapter(bundle_dir, out_dir / "final.safetensors", out_dir / "adapter")
    (out_dir / "rounds.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def write_final_adapter(bundle_dir: Path, weights: Path, out_dir: Path) -> Path | None:
    """Write the final PEFT adapter next to final.safetensors (`fedlora adapter` does the same by hand).

    export.adapter needs only safetensors and fl_protocol (no torch); on a cloud installed without it
    the flat vector is kept and the log says how to convert it. Returns the adapter's path, or None.
    """
    try:
        from export.adapter import write_adapter
    except ImportError as exc:
        logger.warning(
            "final PEFT adapter not written (%s); run: fedlora adapter --bundle %s --weights %s --out %s",
            exc,
            bundle_dir,
            weights,
            out_dir,
        )
        return None
    try:
        path = write_adapter(bundle_dir, weights, out_dir)
    except (FedloraError, OSError, KeyError, ValueError) as exc:  # the run succeeded; keep the vector
        logger.warning("final PEFT adapter not written: %s; the flat vector is %s", exc, weights)
        return None
    logger.info("final PEFT adapter written to %s", path)
    return path
