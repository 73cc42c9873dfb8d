"""Endpoint strings: `host:port` or a unix socket (`unix:///abs/path`, `unix:rel/path`)."""

from __future__ import annotations


def grpc_address(endpoint: str) -> str:
    """The address gRPC binds and dials; raises ValueError for one it cannot use."""
    endpoint = endpoint.strip()
    if endpoint.startswith("unix:"):
        if not endpoint.removeprefix("unix:").lstrip("/"):
            raise ValueError(f"unix endpoint {endpoint!r} names no socket path")
        return endpoint
    if endpoint.startswith("/"):
        return "unix://" + endpoint
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"endpoint {endpoint!r} is neither host:port nor unix:///path")
    return endpoint


def unix_socket_path(endpoint: str) -> str | None:
    """The socket file a unix endpoint names; None for host:port."""
    address = grpc_address(endpoint)
    if address.startswith("unix://"):
        return address.removeprefix("unix://")
    if address.startswith("unix:"):
        return address.removeprefix("unix:")
    return None
