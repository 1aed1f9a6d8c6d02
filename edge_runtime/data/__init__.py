"""A device's local training data (numpy only, no torch; docs/data.md): `records` reads the data
directory into records with their sensitivity tier, `dataset` turns one tier's records into packed,
batched training and held-out eval rows.
"""

from __future__ import annotations

from edge_runtime.data.dataset import IGNORE_INDEX, Batch, LocalDataset, pack_documents, tokenize_records
from edge_runtime.data.records import (
    DATA_SUFFIXES,
    TIERS_FILE,
    LoadReport,
    Record,
    load_records,
    read_data_dir,
)
from edge_runtime.text_tokenizer import load_tokenizer

__all__ = [
    "DATA_SUFFIXES",
    "IGNORE_INDEX",
    "TIERS_FILE",
    "Batch",
    "LoadReport",
    "LocalDataset",
    "Record",
    "load_records",
    "load_tokenizer",
    "pack_documents",
    "read_data_dir",
    "tokenize_records",
]
