"""What stamps each event: its id (a random UUID) and the time it occurred."""

from __future__ import annotations

import os
import time

from google.protobuf.timestamp_pb2 import Timestamp


def new_uuid4s(count: int) -> list[str]:
    """`count` random (version 4) UUIDs as strings, from one read of the system's randomness.

    uuid.uuid4() reads 16 bytes per call; where that system call is slow (sandboxes) it cost
    more than the rest of a prediction.
    """
    raw = os.urandom(16 * count).hex()
    found = []
    for start in range(0, 32 * count, 32):
        h = raw[start : start + 32]
        variant = "89ab"[int(h[16], 16) & 0x3]  # RFC 4122: the top two bits are 10
        found.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}")
    return found


def utc_now() -> Timestamp:
    # From the nanosecond clock: Timestamp.GetCurrentTime goes through a datetime and
    # calendar.timegm, several times the cost.
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    return Timestamp(seconds=seconds, nanos=nanos)
