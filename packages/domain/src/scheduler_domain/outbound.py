"""Which network destinations a user's outbound request may reach.

Tasks run with the worker's network position, so a request to loopback, a private network or a
cloud metadata endpoint would act as the worker. By default only globally routable unicast
addresses are permitted; the deployer lets internal targets through with an allow-list of CIDRs
and host names. The decision is made on an *address* (the result of resolving a name), never on
the spelling of a URL, so every notation of an address meets the same rule. IPv6 forms that
carry an IPv4 address (IPv4-mapped, NAT64, 6to4) are judged by the address they carry.

Pure classification only: resolving names and connecting is the caller's job.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from scheduler_domain.errors import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

#: IPv4 ranges that are not a public destination (IANA special-purpose registry), first match
#: names the reason.
_FORBIDDEN_V4: tuple[tuple[IPNetwork, str], ...] = (
    (_V4("0.0.0.0/8"), "unspecified"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("100.64.0.0/10"), "shared (carrier-grade NAT)"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local (metadata)"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.0.0.0/24"), "IETF protocol assignments"),
    (_V4("192.0.2.0/24"), "documentation"),
    (_V4("192.88.99.0/24"), "6to4 relay anycast"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("198.51.100.0/24"), "documentation"),
    (_V4("203.0.113.0/24"), "documentation"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("240.0.0.0/4"), "reserved (broadcast included)"),
)

_GLOBAL_UNICAST_V6 = _V6("2000::/3")
_MAPPED = _V6("::ffff:0:0/96")
_COMPATIBLE = _V6("::/96")
_NAT64 = _V6("64:ff9b::/96")
_SIX_TO_FOUR = _V6("2002::/16")

#: IPv6 ranges refused outright. Outside these, anything beyond 2000::/3 is refused as well.
_FORBIDDEN_V6: tuple[tuple[IPNetwork, str], ...] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_COMPATIBLE, "IPv4-compatible (deprecated)"),
    (_V6("64:ff9b:1::/48"), "local-use NAT64"),
    (_V6("100::/64"), "discard-only"),
    (_V6("2001::/32"), "Teredo"),
    (_V6("2001::/23"), "IETF protocol assignments"),
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("3fff::/20"), "documentation"),
    (_V6("fc00::/7"), "unique-local"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local (deprecated)"),
    (_V6("ff00::/8"), "multicast"),
)

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, NAT64 well-known prefix,
    6to4), or None."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address in _MAPPED:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    if address in _SIX_TO_FOUR:
        return address.sixtofour
    return None


def forbidden_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public destination (``"loopback"``, ``"private"``...), or None
    when it is one."""
    carried = embedded_ipv4(address)
    if carried is not None:
        reason = forbidden_reason(carried)
        return None if reason is None else f"{reason} (carried in {address})"
    table = _FORBIDDEN_V4 if isinstance(address, ipaddress.IPv4Address) else _FORBIDDEN_V6
    for network, reason in table:
        if address in network:
            return reason
    if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST_V6:
        return "reserved"
    return None


def parse_address(text: str) -> IPAddress | None:
    """``text`` as an IP address in its canonical notation (a zone ``%eth0`` dropped), or None
    when it is not one. Resolving other notations (``2130706433``, ``0x7f.1``) is the
    resolver's job: this never guesses."""
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        address = ipaddress.IPv6Address(int(address))
    return address


def _normal_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """Forbidden ranges refused unless the allow-list names the destination.

    ``allow`` entries are CIDRs (``10.1.0.0/16``, ``127.0.0.1``, ``fd00::/8``) or host names
    (``api.internal``; ``*.internal`` for every name below ``internal``). A host name on the
    list permits whatever its name resolves to; a CIDR permits its addresses whatever name
    led there.
    """

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()

    @classmethod
    def from_allow(cls, entries: Iterable[str], *, field: str = "allow") -> OutboundPolicy:
        """Parse an allow-list; a malformed entry raises :class:`ValidationError` naming
        ``field``."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        suffixes: list[str] = []
        for entry in entries:
            if not isinstance(entry, str) or not entry.strip():
                raise ValidationError("allow-list entries must be non-empty strings", field=field)
            text = entry.strip()
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
                continue
            except ValueError:
                pass
            name = _normal_host(text)
            if not _HOST_NAME.match(name) or "/" in name:
                raise ValidationError(
                    f"{entry!r} is neither a CIDR (10.0.0.0/8) nor a host name (api.internal)",
                    field=field,
                )
            if name.startswith("*."):
                suffixes.append(name[1:])
            else:
                hosts.add(name)
        return cls(networks=tuple(networks), hosts=frozenset(hosts), suffixes=tuple(suffixes))

    def allows_host(self, host: str) -> bool:
        """Whether the allow-list names ``host`` (case and a trailing dot ignored)."""
        name = _normal_host(host)
        return name in self.hosts or any(name.endswith(suffix) for suffix in self.suffixes)

    def refusal(self, host: str, address: IPAddress) -> str | None:
        """Why a connection to ``address``, reached through the name ``host``, is refused, or
        None when it may go ahead."""
        reason = forbidden_reason(address)
        if reason is None or self.allows_host(host):
            return None
        carried = embedded_ipv4(address)
        for network in self.networks:
            if address in network or (carried is not None and carried in network):
                return None
        return reason
