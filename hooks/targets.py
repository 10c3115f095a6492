"""Where webhooks may be sent. The URL is checked when an endpoint is saved, and its host is
resolved and checked again at every send, because DNS can change between the two (and a name
that once pointed outside can be re-pointed at 127.0.0.1 or a cloud metadata address).

Unless SWITCHYARD_WEBHOOKS_ALLOW_PRIVATE is true, every address the host resolves to must be
publicly routable: loopback, private, link-local, shared, multicast, reserved and unspecified
addresses are refused, including IPv4 addresses dressed as IPv6 (mapped, 6to4, Teredo, NAT64).
The send then connects to the very address that was checked (`Target.addresses`), with the
original name kept for the Host header and TLS, so a second lookup cannot swap it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.conf import settings

MAX_URL_LENGTH = 2000
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class TargetRefused(Exception):
    """The URL cannot be used as a webhook target; `message` says why and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Target:
    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal, without brackets
    port: int
    path: str  # path and query, as sent
    explicit_port: bool
    addresses: list[str] = field(default_factory=list)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.explicit_port else host

    def url_for(self, address: str) -> str:
        """The URL with the host replaced by one checked address (the connection is pinned)."""
        literal = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{literal}:{self.port}{self.path}"


def url_parse(url: str) -> Target:
    """Check the URL's form (no network). Raises TargetRefused with a message for people."""
    if not isinstance(url, str) or not url:
        raise TargetRefused("Give the URL the webhooks are sent to, e.g. https://example.com/hooks.")
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise TargetRefused("The URL must not contain spaces or control characters; "
                            "percent-encode them.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise TargetRefused("The URL is malformed or its port is not a number from 1 to "
                            "65535.") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("The URL must start with https:// (or http://).")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("The URL must not carry a user name or password: receivers "
                            "authenticate deliveries by their signature instead.")
    host = parts.hostname or ""
    if not host:
        raise TargetRefused("The URL has no host name.")
    if port == 0:
        raise TargetRefused("The URL's port must be a number from 1 to 65535.")
    try:
        ipaddress.ip_address(host)
        ascii_host = host
    except ValueError:
        try:
            ascii_host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise TargetRefused(f"{host!r} is not a valid host name.") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme=parts.scheme, host=ascii_host, port=port or _default_port(parts.scheme),
                  path=path, explicit_port=port is not None)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def address_refusal(address: IPAddress) -> str | None:
    """Why this address may not be a webhook target, or None if it is publicly routable."""
    embedded: IPAddress | None = None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            embedded = address.ipv4_mapped
        elif address.sixtofour is not None:
            embedded = address.sixtofour
        elif address.teredo is not None:
            embedded = address.teredo[1]
        elif address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if embedded is not None:
        reason = address_refusal(embedded)
        if reason:
            return reason
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_reserved:
        return "a reserved address, not publicly routable"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a reserved address, not publicly routable"
    return None


def target_resolve(url: str) -> Target:
    """Parse the URL, resolve its host and check every address. Raises TargetRefused.

    Returns the target with the addresses to connect to, in resolver order.
    """
    target = url_parse(url)
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise TargetRefused(f"The host {target.host!r} does not resolve; check the name.") from None
    addresses: list[str] = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise TargetRefused(f"The host {target.host!r} does not resolve; check the name.")
    if not settings.SWITCHYARD_WEBHOOKS_ALLOW_PRIVATE:
        for text in addresses:
            reason = address_refusal(ipaddress.ip_address(text))
            if reason:
                shown = target.host if target.host == text else f"{target.host} ({text})"
                raise TargetRefused(
                    f"{shown} is {reason}; webhooks are only sent to public addresses "
                    "(an operator can allow private ones with "
                    "SWITCHYARD_WEBHOOKS_ALLOW_PRIVATE)."
                )
    target.addresses = addresses
    return target
