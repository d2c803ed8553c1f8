"""SSRF guard: which addresses the relay may connect to. Pure checks plus one socket factory.

By default only globally routable unicast addresses are allowed: loopback, private, shared
(100.64.0.0/10), link-local (169.254.0.0/16, where cloud metadata services live), multicast,
reserved, unspecified, site-local (fec0::/10) and IETF-protocol (192.0.0.0/24) addresses are
refused. An IPv6 address that tunnels to an IPv4 one (mapped ``::ffff:a.b.c.d``, 6to4
``2002::/16``, Teredo ``2001::/32``, NAT64 ``64:ff9b::/96``) is judged by the IPv4 address too.
``PGCOURIER_ALLOW_NETWORKS`` opts networks back in (tests and the demo allow loopback).

The check runs on the address actually being connected to, after DNS resolution, from the
socket factory aiohttp calls for every connection: a public-looking host name that resolves to
127.0.0.1, or is rebound to it later, is refused too. Proxies are never used (the session ignores
the environment), and redirects are not followed, so nothing else can pick the address.
The reqwest transport (:mod:`pgcourier.delivery_reqwest`) has no such hook: it looks names up
itself, judges each address with :func:`refusal`, and pins reqwest to an allowed one.
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


# Ranges Python's ``ipaddress`` calls global (at least on some supported versions) that no
# webhook receiver lives in. Checked by prefix so that the rule does not depend on the Python
# release's copy of the IANA registries.
_ALSO_REFUSED: tuple[tuple[Network, str], ...] = (
    (ipaddress.ip_network("192.0.0.0/24"), "a reserved"),  # IETF protocol assignments
    (ipaddress.ip_network("192.88.99.0/24"), "a reserved"),  # deprecated 6to4 relay anycast
    (ipaddress.ip_network("fec0::/10"), "a site-local"),  # deprecated, still routed locally
    (ipaddress.ip_network("3fff::/20"), "a reserved"),  # documentation (RFC 9637)
)
# IPv6 prefixes that carry an IPv4 address (NAT64's well-known prefix; 6to4 and Teredo are
# read with ipaddress's own properties).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _wrapped(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a 6to4, Teredo or NAT64 address tunnels to, if it is one."""
    if address.sixtofour is not None:  # 2002:AABB:CCDD::/48 -> AA.BB.CC.DD
        return address.sixtofour
    if address.teredo is not None:  # 2001:0::/32: (server, client); the client is the target
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: Address, allowed: Sequence[Network]) -> str | None:
    """Why ``address`` may not be connected to, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allowed):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        # A tunnelling prefix can look global while the packets end up at 127.0.0.1 or at the
        # metadata service: the embedded address must pass the same rules, and then the
        # wrapper too (Teredo and NAT64 are refused as such).
        inner = _wrapped(address)
        inner_reason = None if inner is None else refusal(inner, allowed)
        if inner_reason is not None:
            return f"{address} wraps {inner_reason}"
    kind = _kind(address)
    if kind is None:
        return None
    return f"{address} is {kind} address (allow it with PGCOURIER_ALLOW_NETWORKS)"


def _kind(address: Address) -> str | None:
    """What makes ``address`` unfit for a webhook (``"a loopback"``...), or None."""
    for network, kind in _ALSO_REFUSED:
        if address in network:
            return kind
    if address.is_loopback:
        return "a loopback"
    if address.is_link_local:
        return "a link-local"
    if address.is_multicast:
        return "a multicast"
    if address.is_unspecified or address.is_reserved:
        return "a reserved"
    if address.is_private:
        return "a private"
    if not address.is_global:
        return "a reserved"
    return None


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
