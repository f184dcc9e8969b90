"""One HTTP GET over a bare socket, for tests of the status endpoints (no client library, so
what is sent is exactly what a probe sends)."""

from __future__ import annotations

import asyncio


async def get_status(port: int, path: str) -> int:
    """The status code 127.0.0.1:`port` answers a GET of `path` with."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
        await writer.drain()
        return int((await reader.readline()).split()[1])
    finally:
        writer.close()
