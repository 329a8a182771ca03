"""`google.protobuf.Timestamp` <-> timezone-aware UTC `datetime`, for both ends of the contract."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_timestamp(value: datetime | None) -> Timestamp | None:
    """None stays None, so an unknown instant leaves the field unset. Exact to the microsecond,
    by integer arithmetic (`Timestamp.FromDatetime` costs several times more, on every report)."""
    if value is None:
        return None
    if value.tzinfo is None:  # a naive time is local time, as `astimezone` reads it
        value = value.astimezone(UTC)
    since = value - EPOCH
    return Timestamp(seconds=since.days * 86400 + since.seconds, nanos=since.microseconds * 1000)


def from_timestamp(message: Message, field: str) -> datetime | None:
    """The instant in `message.field`, or None when the field is unset."""
    if not message.HasField(field):
        return None
    stamp: Timestamp = getattr(message, field)
    return stamp.ToDatetime(UTC)
