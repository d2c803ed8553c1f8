"""SSRF guard: which addresses the relay may connect to. Pure checks plus one socket factory.

By default only globally routable unicast addresses are allowed: loopback, private, shared
(100.64.0.0/10), link-local (169.254.0.0/16, where cloud metadata services live), multicast,
reserved and unspecified addresses are refused, and so are IPv4 addresses wrapped in IPv6.
``PGCOURIER_ALLOW_NETWORKS`` opts networks back in (tests and the demo allow loopback).

The check runs on the address actually being connected to, after DNS resolution, from the
socket factory aiohttp calls for every connection: a public-looking host name that resolves to
127.0.0.1, or is rebound to it later, is refused too. Proxies are never used (the session ignores
the environment), and redirects are not followed, so nothing else can pick the address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedAddress(OSError):
    """A connection to an address the guard does not allow."""


def parse_networks(text: str) -> tuple[Network, ...]:
    """CIDRs separated by commas or spaces (``127.0.0.0/8, ::1``); :class:`ValueError` names the
    first bad one."""
    networks = []
    for part in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ValueError(f"{part!r} is not a network in CIDR form, e.g. 10.0.0.0/8") from exc
    return tuple(networks)


def refusal(address: Address, allowed: Sequence[Network]) -> str | None:
    """Why ``address`` may not be connected to, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allowed):
        return None
    if address.is_loopback:
        kind = "a loopback"
    elif address.is_link_local:
        kind = "a link-local"
    elif address.is_multicast:
        kind = "a multicast"
    elif address.is_unspecified or address.is_reserved:
        kind = "a reserved"
    elif address.is_private:
        kind = "a private"
    elif not address.is_global:
        kind = "a reserved"
    else:
        return None
    return f"{address} is {kind} address (allow it with PGCOURIER_ALLOW_NETWORKS)"


class AddressGuard:
    """A socket factory for aiohttp's connector that refuses addresses :func:`refusal` names."""

    def __init__(self, allowed: Sequence[Network] = ()) -> None:
        self.allowed = tuple(allowed)

    def __call__(self, addr_info: Any) -> socket.socket:
        family, type_, proto, _canonname, sockaddr = addr_info
        reason = refusal(ipaddress.ip_address(sockaddr[0]), self.allowed)
        if reason is not None:
            raise RefusedAddress(f"refused to connect: {reason}")
        return socket.socket(family=family, type=type_, proto=proto)
