"""Which network addresses the downloader may connect to.

The web is hostile: a candidate URL (or a redirect, or a DNS answer) may point at the
gateway's own network. Everything that is not a public unicast address is refused,
including IPv6 forms that embed an IPv4 address, unless an allowlist entry admits it
(for test and demo servers on loopback).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Ranges that `ipaddress` reports as global but that must never be fetched from.
_EXTRA_BLOCKED: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "100.64.0.0/10",  # CGNAT (is_global is already False; listed for clarity)
        "fec0::/10",  # deprecated IPv6 site-local
        "ff00::/8",  # IPv6 multicast, some of which is_global
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries: mapped, compatible, 6to4, Teredo, NAT64."""
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64 or ip in _NAT64_LOCAL or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def is_public_address(ip: IPAddress) -> bool:
    """True when ``ip`` is a public unicast address (and so is anything it embeds)."""
    if (
        not ip.is_global
        or ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or any(ip in net for net in _EXTRA_BLOCKED if net.version == ip.version)
    ):
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        return all(is_public_address(inner) for inner in _embedded_ipv4(ip))
    return True


# What an all-numeric host that no parser accepts (``1.2.3.999999``) stands for: an
# address that is never permitted, so the URL is refused instead of being handed to a
# URL library or resolver that might read it some other way.
_NO_ADDRESS = ipaddress.IPv4Address(0)
_LOOPBACK = ipaddress.IPv4Address("127.0.0.1")


def _ipv4_number(part: str) -> int | None:
    """One part of an inet_aton-style address: decimal, 0x hex or 0-led octal."""
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:], 16
        if digits == "":
            return 0  # "0x" alone is zero, as inet_aton and browsers read it
    elif len(part) > 1 and part.startswith("0"):
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    allowed = "0123456789abcdefABCDEF"[: base if base <= 10 else 22]
    if not digits or any(c not in allowed for c in digits):
        return None
    return int(digits, base)


def _looks_numeric(label: str) -> bool:
    return label != "" and (all(c in "0123456789" for c in label)
                            or (label[:2] in ("0x", "0X") and all(c in "0123456789abcdefABCDEF" for c in label[2:])))


def _inet_aton(host: str) -> IPAddress | None:
    """Read ``host`` as browsers and inet_aton do: 1-4 parts, the last filling the rest.

    ``127.1``, ``2130706433``, ``0x7f.1``, ``017700000001`` and ``0177.0.0.1`` are all
    127.0.0.1. Returns None when the host is a name (its last label is not numeric),
    and ``_NO_ADDRESS`` when it is numeric but no valid address.
    """
    parts = host.split(".")
    if not _looks_numeric(parts[-1]):
        return None
    numbers = [_ipv4_number(p) if p else None for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        return _NO_ADDRESS
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):  # type: ignore[operator]
        return _NO_ADDRESS
    value = 0
    for n in head:
        value = value * 256 + n  # type: ignore[operator]
    return ipaddress.IPv4Address(value * 256 ** (4 - len(head)) + last)


def _bare(text: str) -> str:
    """The host without IPv6 brackets, zone, one trailing dot; lower case."""
    host = text.strip().strip("[]").split("%", 1)[0].lower()
    return host[:-1] if host.endswith(".") else host


def parse_ip(text: str) -> IPAddress | None:
    """The address a host string stands for without asking DNS, or None for a name.

    IP literals in every spelling a URL library, inet_aton or a browser accepts count
    (shorthand, decimal, octal and hex parts, a trailing dot), and so do the reserved
    ``localhost`` names, which always mean loopback (RFC 6761) whatever DNS says.
    """
    host = _bare(text)
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost"):
        return _LOOPBACK
    return _inet_aton(host)


def is_canonical_ip(text: str) -> bool:
    """True for a host that is not an address literal, or one written the usual way.

    ``127.1``, ``0177.0.0.1``, ``2130706433`` or ``1.2.3.4.`` are not: whatever they
    stand for, they are refused rather than handed on, since the next parser (the URL
    library, the resolver) may read them differently from the check.
    """
    host = text.strip().strip("[]").split("%", 1)[0]
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return _inet_aton(_bare(text)) is None


@dataclass(frozen=True)
class Allowlist:
    """Exceptions to the public-address rule: host names, host:port pairs, CIDR ranges."""

    hosts: frozenset[str] = frozenset()
    host_ports: frozenset[tuple[str, int]] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    def admits(self, host: str, port: int, ip: IPAddress) -> bool:
        host = host.strip("[]").lower().rstrip(".")
        if host in self.hosts or (host, port) in self.host_ports:
            return True
        address = str(ip)
        if address in self.hosts or (address, port) in self.host_ports:
            return True
        return any(ip.version == net.version and ip in net for net in self.networks)


def parse_allowlist(entries: Iterable[str]) -> Allowlist:
    """Parse ``GATEWAY_FETCH_ALLOW`` entries: ``host``, ``host:port``, ``[v6]:port`` or ``CIDR``."""
    hosts: set[str] = set()
    host_ports: set[tuple[str, int]] = set()
    networks: list[IPNetwork] = []
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        if "/" in entry:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"{raw!r} is not a CIDR range") from None
            continue
        if entry.startswith("["):
            inside, _, rest = entry[1:].partition("]")
            if rest.startswith(":"):
                host_ports.add((inside, _port(raw, rest[1:])))
            else:
                hosts.add(inside)
            continue
        if entry.count(":") == 1:
            host, _, port = entry.partition(":")
            host_ports.add((host.rstrip("."), _port(raw, port)))
            continue
        if parse_ip(entry) is None and not all(part for part in entry.rstrip(".").split(".")):
            raise ValueError(f"{raw!r} is not a host name")
        hosts.add(entry.rstrip("."))
    return Allowlist(frozenset(hosts), frozenset(host_ports), tuple(networks))


def _port(raw: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{raw!r} has an invalid port")
    return int(text)


def permitted(host: str, port: int, ip: IPAddress, allow: Allowlist) -> bool:
    """The single rule: a public address, or one the allowlist admits for this host/port.

    A host spelt as a non-canonical address literal is never permitted (see
    :func:`is_canonical_ip`).
    """
    if not is_canonical_ip(host):
        return False
    return is_public_address(ip) or allow.admits(host, port, ip)
