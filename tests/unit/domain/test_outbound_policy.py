"""Which destinations an outbound request may reach, judged on addresses."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from scheduler_domain.errors import ValidationError
from scheduler_domain.outbound import OutboundPolicy, forbidden_reason, parse_address

pytestmark = pytest.mark.timeout(10)

DEFAULT = OutboundPolicy()


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("169.254.169.254", "link-local (metadata)"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "shared (carrier-grade NAT)"),
        ("100.127.255.255", "shared (carrier-grade NAT)"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "reserved (broadcast included)"),
        ("240.0.0.1", "reserved (broadcast included)"),
        ("192.0.0.192", "IETF protocol assignments"),
        ("198.18.0.1", "benchmarking"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("febf::1", "link-local"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("ff02::1", "multicast"),
        ("fec0::1", "site-local (deprecated)"),
        ("::ffff:127.0.0.1", "loopback (carried in ::ffff:7f00:1)"),
        ("::ffff:169.254.169.254", "link-local (metadata) (carried in ::ffff:a9fe:a9fe)"),
        ("::127.0.0.1", "IPv4-compatible (deprecated)"),
        ("::8.8.8.8", "IPv4-compatible (deprecated)"),
        ("64:ff9b::7f00:1", "loopback (carried in 64:ff9b::7f00:1)"),
        ("64:ff9b::a9fe:a9fe", "link-local (metadata) (carried in 64:ff9b::a9fe:a9fe)"),
        ("64:ff9b:1::1", "local-use NAT64"),
        ("2002:7f00:1::1", "loopback (carried in 2002:7f00:1::1)"),
        ("2002:a00:1::", "private (carried in 2002:a00:1::)"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ("2001:db8::1", "documentation"),
        ("100::1", "discard-only"),
        ("4000::1", "reserved"),
    ],
)
def test_forbidden_addresses_are_named(address: str, reason: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "100.63.255.255",  # just below the CGNAT range
        "172.32.0.1",  # just above 172.16/12
        "169.253.255.255",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
        "2002:808:808::1",  # 6to4 of 8.8.8.8
    ],
)
def test_public_addresses_are_permitted(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None
    assert DEFAULT.refusal("example.org", ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "notation",
    ["2130706433", "0x7f.1", "0177.0.0.1", "127.1", "0x7f000001", "127.0.1", "017700000001"],
)
def test_every_ipv4_notation_resolves_to_a_refused_loopback(notation: str) -> None:
    # The policy judges what the resolver returns, so each spelling meets the same rule.
    resolved = socket.getaddrinfo(notation, 80, type=socket.SOCK_STREAM)[0][4][0]
    address = parse_address(resolved)

    assert address == ipaddress.IPv4Address("127.0.0.1")
    assert DEFAULT.refusal(notation, address) == "loopback"


def test_parse_address_takes_brackets_and_zones_and_refuses_names() -> None:
    assert parse_address("[::ffff:127.0.0.1]") == ipaddress.ip_address("::ffff:7f00:1")
    assert parse_address("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    assert parse_address("localhost") is None
    assert parse_address("2130706433") is None  # a resolver's business, not a guess


def test_allow_list_cidr_permits_its_addresses_only() -> None:
    policy = OutboundPolicy.from_allow(["127.0.0.0/8", "fd00::/8", "10.1.2.3"])
    loopback = ipaddress.ip_address("127.0.0.1")

    assert policy.refusal("anything", loopback) is None
    assert policy.refusal("x", ipaddress.ip_address("::ffff:127.0.0.1")) is None  # mapped form
    assert policy.refusal("x", ipaddress.ip_address("fd00::5")) is None
    assert policy.refusal("x", ipaddress.ip_address("10.1.2.3")) is None
    assert policy.refusal("x", ipaddress.ip_address("10.1.2.4")) == "private"
    assert policy.refusal("x", ipaddress.ip_address("169.254.169.254")) is not None
    assert policy.refusal("x", ipaddress.ip_address("::1")) == "loopback"


def test_allow_list_host_names_match_case_and_trailing_dot_insensitively() -> None:
    policy = OutboundPolicy.from_allow(["LocalHost", "*.svc.internal"])
    loopback = ipaddress.ip_address("127.0.0.1")

    assert policy.refusal("localhost", loopback) is None
    assert policy.refusal("LOCALHOST.", loopback) is None
    assert policy.refusal("api.svc.internal", loopback) is None
    assert policy.refusal("svc.internal", loopback) == "loopback"
    assert policy.refusal("evil-localhost", loopback) == "loopback"
    assert policy.refusal("localhost.evil.example", loopback) == "loopback"


def test_default_policy_refuses_names_that_resolve_to_loopback() -> None:
    assert DEFAULT.refusal("localhost", ipaddress.ip_address("127.0.0.1")) == "loopback"


@pytest.mark.parametrize("entry", ["", "  ", "not a host", "10.0.0.0/33", "-bad.example", "a/b"])
def test_malformed_allow_entries_are_refused_with_the_field(entry: str) -> None:
    with pytest.raises(ValidationError) as info:
        OutboundPolicy.from_allow([entry], field="executors.http.allow")

    assert info.value.field == "executors.http.allow"
