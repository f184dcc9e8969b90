"""One service with workers per port: a lock the supervisor holds for as long as it runs.

Workers share their port with SO_REUSEPORT (inference_service.workers), which the kernel grants
to any socket of the same user that sets it too: a second service with workers, started on the
same address by mistake (another checkout's `make up`, a second instance), would bind beside the
first and get a share of every school's connections, with its own model and spool. Refusing
whatever listens there already is no answer, since a supervisor that was killed leaves its
workers listening while they finish their calls (up to their stop bound), and the service
restarted meanwhile must start beside them.

So the supervisor also binds a Linux abstract Unix socket named after the port. Such a name lives
in the network namespace, as the port does (a container of its own has both to itself), and the
kernel frees it when its holder dies, even by SIGKILL: a live supervisor holds it, a killed one
does not, and its orphans never did (Python's sockets are not inherited, and spawned workers get
only the descriptors multiprocessing passes them). It is named after the port alone, not the
host: with SO_REUSEPORT, 0.0.0.0, 127.0.0.1 and [::] on one port all bind at once, and the most
specific takes the connections meant for the others. So two services with workers cannot share
a port even on two addresses of this machine. The socket listens only so that a refused start
can name its holder (SO_PEERCRED); each such probe is accepted and closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
from collections.abc import Iterator

from studentperf.config import ConfigError

_PEER_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def lock_name(port: int) -> bytes:
    return b"\0studentperf-inference-port-%d" % port


@contextlib.contextmanager
def hold_port(address: str) -> Iterator[None]:
    """Holds `address`'s port (host:port, the port already chosen) for this supervisor, on the
    running event loop; raises ConfigError naming the address when another live one holds it."""
    port = int(address.rpartition(":")[2])
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lock.bind(lock_name(port))
    except OSError as error:
        lock.close()
        if error.errno != errno.EADDRINUSE:
            raise ConfigError(f"cannot hold port {port} for this service: {error}") from None
        raise ConfigError(
            f"STUDENTPERF_LISTEN_ADDRESS: cannot listen on {address}: another service with "
            f"workers{_holder(port)} listens on port {port}, and the kernel would split the "
            "calls between the two. Stop it, or set another address"
        ) from None
    try:
        lock.listen(8)
        lock.setblocking(False)
        loop = asyncio.get_running_loop()
        loop.add_reader(lock.fileno(), _turn_away, lock)
        try:
            yield
        finally:
            loop.remove_reader(lock.fileno())
    finally:
        lock.close()


def _turn_away(lock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        lock.accept()[0].close()


def _holder(port: int) -> str:
    """Names the process that holds the port's lock, as " (supervisor pid N)", or returns ""
    when it cannot be told (it does not answer, or lives in a process namespace this one
    cannot see)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1)
    try:
        probe.connect(lock_name(port))
        credentials = probe.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, _PEER_CREDENTIALS.size
        )
    except OSError:
        return ""
    finally:
        probe.close()
    pid, _, _ = _PEER_CREDENTIALS.unpack(credentials)
    return f" (supervisor pid {pid})" if pid > 0 else ""
