"""A TCP link slower than a machine's own: a proxy that passes what a server sends at most
`bytes_per_s` (what the client sends goes at once), for tests of work that must still finish
over a slow network."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

_PIECE = 8192


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, bytes_per_s: float | None
) -> None:
    try:
        while piece := await reader.read(_PIECE):
            writer.write(piece)
            await writer.drain()
            if bytes_per_s is not None:
                await asyncio.sleep(len(piece) / bytes_per_s)
    except ConnectionError:
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def slow_link(host: str, port: int, bytes_per_s: float) -> AsyncIterator[int]:
    """Listens on a free port of 127.0.0.1 (yielded) and forwards each connection to
    host:port, the answers slowed to `bytes_per_s`."""
    pumps: set[asyncio.Task[None]] = set()

    async def forward(client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        server_in, server_out = await asyncio.open_connection(host, port)
        for work in (_pump(client_in, server_out, None), _pump(server_in, client_out, bytes_per_s)):
            task = asyncio.create_task(work)
            pumps.add(task)
            task.add_done_callback(pumps.discard)

    server = await asyncio.start_server(forward, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(pumps):
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        await server.wait_closed()
