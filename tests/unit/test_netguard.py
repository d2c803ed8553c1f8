"""The SSRF guard's address rules (pure), and its socket factory refusing before connecting."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from pgcourier.netguard import AddressGuard, RefusedAddress, parse_networks, refusal


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "reserved"),
        ("100.64.0.1", "reserved"),  # shared address space (carrier NAT)
        ("240.0.0.1", "reserved"),
        ("fc00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4 wrapped in IPv6
        # Issue 15.11: ranges Python 3.11 calls global, and tunnels to IPv4.
        ("fec0::1", "site-local"),  # deprecated site-local
        ("192.0.0.1", "reserved"),  # IETF protocol assignments, whole /24
        ("192.0.0.9", "reserved"),
        ("192.0.0.170", "reserved"),
        ("192.88.99.1", "reserved"),  # deprecated 6to4 relay anycast
        ("3fff::1", "reserved"),  # documentation (RFC 9637)
        ("100::1", "reserved"),  # discard-only
        ("2001:db8::1", "private"),  # documentation
        ("64:ff9b::808:808", "reserved"),  # NAT64, even wrapping a public address
    ],
)
def test_non_public_addresses_are_refused(address: str, kind: str) -> None:
    reason = refusal(ipaddress.ip_address(address), ())
    assert reason is not None
    assert f"a {kind} address" in reason
    assert "PGCOURIER_ALLOW_NETWORKS" in reason


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), ()) is None


def test_allowed_networks_opt_in() -> None:
    allowed = parse_networks("127.0.0.0/8, ::1/128 10.0.0.0/8")
    assert refusal(ipaddress.ip_address("127.0.0.1"), allowed) is None
    assert refusal(ipaddress.ip_address("::1"), allowed) is None
    assert refusal(ipaddress.ip_address("10.9.9.9"), allowed) is None
    assert refusal(ipaddress.ip_address("192.168.0.1"), allowed) is not None


def test_bad_networks_are_named() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not a network"):
        parse_networks("127.0.0.0/8,10.0.0.0/33")


def test_the_socket_factory_refuses_before_any_socket_exists() -> None:
    guard = AddressGuard()
    info = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80))
    with pytest.raises(RefusedAddress, match=r"127\.0\.0\.1 is a loopback address"):
        guard(info)
    allowed = AddressGuard(parse_networks("127.0.0.0/8"))
    sock = allowed(info)
    try:
        assert sock.family == socket.AF_INET
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("address", "inner", "kind"),
    [
        ("2002:7f00:1::", "127.0.0.1", "loopback"),  # 6to4
        ("2002:a9fe:a9fe::1", "169.254.169.254", "link-local"),  # 6to4 to cloud metadata
        ("2002:c0a8:101:1::1", "192.168.1.1", "private"),
        # Teredo: the client's IPv4 is the last 32 bits, inverted (0x80fffffe -> 127.0.0.1).
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1", "loopback"),
        ("2001:0:4136:e378:8000:63bf:5601:5601", "169.254.169.254", "link-local"),
        ("64:ff9b::7f00:1", "127.0.0.1", "loopback"),  # NAT64
        ("64:ff9b::a9fe:a9fe", "169.254.169.254", "link-local"),
    ],
)
def test_ipv4_tunnelled_in_ipv6_is_judged_by_the_ipv4_address(
    address: str, inner: str, kind: str
) -> None:
    reason = refusal(ipaddress.ip_address(address), ())
    assert reason is not None
    assert f"wraps {inner} is a {kind} address" in reason


def test_6to4_to_a_public_address_passes_and_allowed_inner_networks_apply() -> None:
    assert refusal(ipaddress.ip_address("2002:808:808::1"), ()) is None
    # Allowing 127.0.0.0/8 (tests, demo) also allows it through 6to4, as through ::ffff:.
    allowed = parse_networks("127.0.0.0/8")
    assert refusal(ipaddress.ip_address("2002:7f00:1::"), allowed) is None
    # Teredo is refused as such even when the client address is allowed.
    assert refusal(ipaddress.ip_address("2001:0:4136:e378:8000:63bf:80ff:fffe"), allowed)


def test_the_socket_factory_refuses_6to4_to_metadata() -> None:
    info = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2002:a9fe:a9fe::1", 80, 0, 0))
    with pytest.raises(RefusedAddress, match=r"wraps 169\.254\.169\.254"):
        AddressGuard()(info)
