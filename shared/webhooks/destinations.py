"""Where a webhook may go: URL checks and the addresses a host resolves to.

A webhook is a request the farm makes on a user's behalf, from inside its network, so a
URL must not reach what only the farm can reach (server-side request forgery). A URL is
refused (``WebhookDestinationRefused``, 422 at submit) when any address its host resolves
to is loopback, private, shared (CGNAT), link-local, multicast, reserved, unspecified or
otherwise not global, or a cloud-metadata address (``METADATA_ADDRESSES``), IPv4 embedded
in IPv6 (mapped, 6to4, Teredo, NAT64) included. An operator allows exceptions with
``Settings.webhook_allow_hosts``: a host name (all its addresses), an address or a CIDR
(addresses in it); a metadata address only when the entry is exactly that address.

The check runs twice: when the job is submitted, and again at each delivery, whose
connection then goes to the address just checked (``Destination.addresses``), so a name
that resolves elsewhere later (DNS rebinding) cannot slip past. In production
(``Settings.env``) a URL must be ``https`` unless its host is allowed by the operator.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import SplitResult, urlsplit

from shared.db.orm import WEBHOOK_URL_LEN
from shared.errors import InvalidWebhook, WebhookDestinationRefused
from shared.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Instance-metadata and platform endpoints of the big clouds (AWS IMDS, ECS and EKS
#: credentials, IMDS over IPv6, Alibaba, Azure's wire server, which is a public address).
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.170.23",
        "fd00:ec2::254",
        "fd00:ec2::23",
        "100.100.100.200",
        "168.63.129.16",
    )
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class AllowList:
    """``Settings.webhook_allow_hosts``, parsed: host names and networks."""

    names: frozenset[str]
    networks: tuple[IPNetwork, ...]

    def allows_name(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    def allows_address(self, ip: IPAddress) -> bool:
        if ip in METADATA_ADDRESSES:  # only an entry naming exactly this address
            return any(n.num_addresses == 1 and ip in n for n in self.networks)
        return any(ip in n for n in self.networks)


@lru_cache(maxsize=32)
def allow_list(entries: str) -> AllowList:
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in (e.strip().lower().rstrip(".") for e in entries.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            names.add(entry)
    return AllowList(frozenset(names), tuple(networks))


def embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64): each is checked too."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if ip in NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [a for a in found if a is not None]


def refusal(ip: IPAddress) -> str | None:
    """Why webhooks may not reach ``ip`` (a short phrase), or None when it is a public address."""
    for address in (*embedded_ipv4(ip), ip):  # the IPv4 inside first: it says more
        if address in METADATA_ADDRESSES:
            return "cloud metadata"
        for kind in ("unspecified", "loopback", "link_local", "private", "multicast", "reserved"):
            if getattr(address, f"is_{kind}"):
                return kind.replace("_", "-")
        if not address.is_global:
            return "non-public"
    return None


@dataclass(frozen=True)
class Destination:
    """A checked webhook URL: where to connect (``addresses``, all allowed) and what to ask for."""

    url: str
    scheme: str
    host: str  # as in the URL, without brackets; the Host header and the TLS server name
    port: int
    target: str  # path and query
    addresses: tuple[str, ...]


def parse_url(url: str) -> SplitResult:
    """The URL's parts; ``InvalidWebhook`` unless it is an absolute http(s) URL with a host."""
    if not isinstance(url, str) or not url:
        raise InvalidWebhook("'webhook' must be an absolute http or https URL (a string).")
    if len(url) > WEBHOOK_URL_LEN:
        raise InvalidWebhook(f"The webhook URL is longer than {WEBHOOK_URL_LEN} characters.")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise InvalidWebhook("The webhook URL contains whitespace or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidWebhook(f"The webhook URL is not valid ({exc}).") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise InvalidWebhook(f"The webhook URL must be http or https, not {parts.scheme or 'relative'!r}.")
    if not parts.hostname:
        raise InvalidWebhook("The webhook URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhook("The webhook URL must not carry credentials; check the signature instead.")
    if port == 0:
        raise InvalidWebhook("The webhook URL's port must be 1..65535.")
    return parts


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal is its own); ``InvalidWebhook`` when none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidWebhook(f"The webhook host {host!r} does not resolve ({exc}).", host=host) from None
    seen: dict[IPAddress, None] = {}
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        seen.setdefault(ipaddress.ip_address(address))
    return list(seen)


def check_destination(url: str, settings: Settings) -> Destination:
    """Parse ``url``, resolve its host and check every address (see the module docstring);
    raises ``InvalidWebhook`` or ``WebhookDestinationRefused`` with a detail that says why."""
    parts = parse_url(url)
    host = parts.hostname or ""
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    allowed = allow_list(settings.webhook_allow_hosts)
    addresses = resolve(host, port)
    by_name = allowed.allows_name(host)
    if not by_name:
        for ip in addresses:
            reason = refusal(ip)
            if reason is not None and not allowed.allows_address(ip):
                shown = host if host == str(ip) else f"{host} resolves to {ip}, which"
                raise WebhookDestinationRefused(
                    f"The webhook URL is refused: {shown} is a {reason} address, and webhooks go only to public "
                    "addresses unless the operator allows the host (STYLEFARM_WEBHOOK_ALLOW_HOSTS).",
                    host=host,
                    address=str(ip),
                    reason=reason,
                )
    operator_allowed = by_name or all(allowed.allows_address(ip) for ip in addresses)
    if parts.scheme != "https" and settings.env == "production" and not operator_allowed:
        raise WebhookDestinationRefused(
            "The webhook URL must use https (plain http only to hosts the operator allows).", host=host
        )
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Destination(url, parts.scheme, host, port, target, tuple(str(ip) for ip in addresses))
