"""Channel set-up shared by both client flavours: TLS, client certificates, the bearer token."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

Pem = bytes | str | Path  # PEM bytes or text, or the path of a PEM file

Metadata = tuple[tuple[str, str], ...]

# gRPC's own reconnect backoff grows to 120 s by default; while it waits, calls fail at once with
# UNAVAILABLE, so a server back after a restart would stay out of reach of our retries. (The
# minimum, which is also the connect timeout, keeps its default of 20 s.)
_RECONNECT_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@dataclass(frozen=True)
class ChannelPlan:
    """What a channel needs: credentials (None: plaintext), options, metadata for every call."""

    target: str
    credentials: grpc.ChannelCredentials | None
    options: list[tuple[str, Any]]
    metadata: Metadata


def _pem(value: Pem | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    return Path(value).read_bytes()


def is_local(target: str) -> bool:
    """Whether `target` names this machine (a token may then travel without TLS): a unix
    socket, `localhost`, or loopback addresses only (every one of an `ipv4:`/`ipv6:` list).
    A name is not resolved: `127.example.org` may be anywhere."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    for prefix in ("ipv4:", "ipv6:"):
        if target.startswith(prefix):
            addresses = target.removeprefix(prefix).split(",")
            return all(_loopback(_host(address)) for address in addresses)
    host = _host(target.removeprefix("dns:///").removeprefix("dns:"))
    return host == "localhost" or _loopback(host)


def _host(address: str) -> str:
    """The host of `host:port`, `[v6]:port`, or a bare host."""
    if address.startswith("["):
        return address[1:].split("]", 1)[0].lower()
    return (address.rsplit(":", 1)[0] if address.count(":") == 1 else address).lower()


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, not an address
        return False


def plan_channel(
    target: str,
    *,
    tls: bool,
    root_certificates: Pem | None,
    client_certificate: Pem | None,
    client_key: Pem | None,
    token: str | None,
    server_name: str | None,
    max_message_bytes: int,
) -> ChannelPlan:
    if not target:
        raise ValueError("target is empty; expected host:port, e.g. 127.0.0.1:50051")
    if (client_certificate is None) != (client_key is None):
        raise ValueError("client_certificate and client_key go together (mutual TLS)")
    if not tls and (root_certificates or client_certificate or server_name):
        raise ValueError("certificates and server_name are for TLS: pass tls=True")
    if token is not None and not token.strip():
        raise ValueError("token is empty")
    options = [
        *_RECONNECT_OPTIONS,
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    if not tls:
        if token is not None and not is_local(target):
            raise ValueError(
                f"refusing to send a bearer token in the clear to {target}: use tls=True "
                "(plaintext tokens are allowed only to this machine)"
            )
        metadata: Metadata = (("authorization", f"Bearer {token}"),) if token else ()
        return ChannelPlan(target, None, options, metadata)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_pem(root_certificates),
        private_key=_pem(client_key),
        certificate_chain=_pem(client_certificate),
    )
    if token:
        # Call credentials: gRPC adds `authorization: Bearer <token>` to each call, over TLS only.
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token)
        )
    return ChannelPlan(target, credentials, options, ())
