"""Wire format: signed frames, the canonical field codec, the declarative message schema, the message
dataclasses and their framing (docs/wire-format.md)."""

from __future__ import annotations

from fl_protocol.wire.envelope import WireMessage, decode_message, encode_message
from fl_protocol.wire.fields import FieldValue, decode_fields, encode_fields
from fl_protocol.wire.framing import FrameHeader, decode_frame, encode_frame, peek_header
from fl_protocol.wire.messages import (
    GlobalModel,
    GlobalModelDelta,
    PartialAggregate,
    PlainUpdate,
    RoundTask,
    Status,
)
from fl_protocol.wire.task_settings import DpSettings, SecAggSettings, TrainingSettings

__all__ = [
    "DpSettings",
    "FieldValue",
    "FrameHeader",
    "GlobalModel",
    "GlobalModelDelta",
    "PartialAggregate",
    "PlainUpdate",
    "RoundTask",
    "SecAggSettings",
    "Status",
    "TrainingSettings",
    "WireMessage",
    "decode_fields",
    "decode_frame",
    "decode_message",
    "encode_fields",
    "encode_frame",
    "encode_message",
    "peek_header",
]
