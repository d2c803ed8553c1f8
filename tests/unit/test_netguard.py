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
