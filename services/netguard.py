"""Server-side HTTP requests that a caller-supplied URL cannot turn against our own network (SSRF).

Every hop is resolved once, every resolved address is checked, and the connection goes to the
checked address itself, so a DNS answer that changes between check and connect (rebinding)
cannot slip a private address past the guard.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urljoin, urlsplit

import urllib3
from urllib3.exceptions import HTTPError, SSLError

from services.errors import BlockedUrl, ConveyorError, FetchFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Credentials meant for one origin must not follow a redirect to another.
ORIGIN_BOUND_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
BODY_HEADERS = frozenset({"content-type", "content-length"})
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True)
class Target:
    """One checked hop: where to connect (ip, port) and what to ask for (host, path)."""

    scheme: str
    host: str
    port: int
    ip: str
    path: str

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == DEFAULT_PORTS[self.scheme] else f"{name}:{self.port}"


def redact_url(url: str) -> str:
    """The URL without credentials, query or fragment, for messages: signed URLs carry secrets there."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable url>"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _parse_networks(cidrs: Iterable[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, when the network would deliver it there."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _is_public(ip: IPAddress) -> bool:
    # is_global alone lets multicast through (224.0.0.0/4 is "global"), so each class is named.
    return (
        ip.is_global
        and not ip.is_private
        and not ip.is_loopback
        and not ip.is_link_local
        and not ip.is_multicast
        and not ip.is_reserved
        and not ip.is_unspecified
    )


def _is_allowed(ip: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    embedded = _embedded_ipv4(ip)
    candidates = [ip] if embedded is None else [ip, embedded]
    if any(address in network for address in candidates for network in allowed):
        return True
    return all(_is_public(address) for address in candidates)


def _split(url: str) -> tuple[SplitResult, int | None]:
    # Parsers disagree about whitespace, control characters and backslashes; refusing them
    # keeps the host we check the same host any later component would see.
    if any(ch <= " " or ch == "\\" or ch == "\x7f" for ch in url):
        raise BlockedUrl("The URL contains whitespace, control characters or backslashes.")
    try:
        parts = urlsplit(url)
        return parts, parts.port
    except ValueError as exc:
        raise BlockedUrl(f"The URL cannot be parsed ({exc}).") from exc


def _ascii_host(hostname: str) -> str:
    try:
        return hostname.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise BlockedUrl("The URL's host name is not a valid domain name.") from exc


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        # An unknown name stays unknown on retry; anything else (EAI_AGAIN, ...) may pass.
        transient = exc.errno != socket.EAI_NONAME
        raise FetchFailed(f"Cannot resolve {host} ({exc.strerror}).", transient=transient) from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        # Drop an IPv6 zone ("%eth0"): the address class is what matters for the check.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchFailed(f"{host} resolves to no address.")
    return addresses


def resolve_public_target(url: str, allow_cidrs: Sequence[str] = ()) -> Target:
    """Check a URL and resolve its host once; BlockedUrl unless every address may be reached."""
    parts, explicit_port = _split(url)
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise BlockedUrl(f"Only http and https URLs are fetched, not {scheme or 'a relative URL'}.")
    if "@" in parts.netloc:
        raise BlockedUrl("URLs with credentials (user:password@host) are refused.")
    if not parts.hostname:
        raise BlockedUrl("The URL has no host.")
    port = explicit_port if explicit_port is not None else DEFAULT_PORTS[scheme]
    if port == 0:
        raise BlockedUrl("Port 0 cannot be connected to.")
    host = _ascii_host(parts.hostname)
    allowed = _parse_networks(allow_cidrs)
    addresses = _resolve(host, port)
    # One refused address refuses the name: a resolver may hand out any of them later.
    refused = [str(address) for address in addresses if not _is_allowed(address, allowed)]
    if refused:
        raise BlockedUrl(f"{host} resolves to a non-public address ({', '.join(refused)}).")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(scheme=scheme, host=host, port=port, ip=str(addresses[0]), path=path)


def _without(headers: dict[str, str], names: frozenset[str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in names}


def _pool(target: Target, timeout: urllib3.Timeout) -> urllib3.HTTPConnectionPool:
    if target.scheme == "https":
        # Connect to the checked IP, but let SNI and the certificate check use the name.
        return urllib3.HTTPSConnectionPool(
            target.ip,
            target.port,
            timeout=timeout,
            retries=False,
            maxsize=1,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
        )
    return urllib3.HTTPConnectionPool(target.ip, target.port, timeout=timeout, retries=False, maxsize=1)


def _send(
    target: Target, method: str, headers: dict[str, str], body: bytes | None, timeout: urllib3.Timeout
) -> urllib3.BaseHTTPResponse:
    request_headers = _without(headers, frozenset({"host"}))
    request_headers["Host"] = target.host_header
    try:
        return _pool(target, timeout).urlopen(
            method,
            target.path,
            body=body,
            headers=request_headers,
            retries=False,
            redirect=False,
            assert_same_host=False,
            preload_content=False,
        )
    except SSLError as exc:
        # A certificate that does not match will not match on retry either.
        raise FetchFailed(f"TLS with {target.host} failed ({exc}).", transient=False) from exc
    except (HTTPError, OSError) as exc:
        raise FetchFailed(f"Request to {target.host} failed ({type(exc).__name__}).") from exc


def open_guarded(
    method: str,
    url: str,
    *,
    allow_cidrs: Sequence[str],
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    connect_timeout: float,
    read_timeout: float,
    max_redirects: int = 5,
) -> urllib3.BaseHTTPResponse:
    """Send one request through the SSRF guard, following redirects only to guarded targets.

    The response is unread (preload_content=False); the caller streams it and closes it.
    """
    timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
    current_headers = dict(headers or {})
    current_url = url
    target = resolve_public_target(current_url, allow_cidrs)
    redirects = 0
    while True:
        response = _send(target, method, current_headers, body, timeout)
        location = response.headers.get("Location")
        if response.status not in REDIRECT_STATUSES or not location:
            return response
        response.close()
        redirects += 1
        if redirects > max_redirects:
            raise ConveyorError(
                f"{redact_url(url)} redirected (HTTP {response.status}) more than {max_redirects} times.",
                code="too_many_redirects",
                transient=False,
            )
        current_url = urljoin(current_url, location)
        next_target = resolve_public_target(current_url, allow_cidrs)
        if next_target.origin != target.origin:
            current_headers = _without(current_headers, ORIGIN_BOUND_HEADERS)
        # As browsers do: 303 always becomes GET, and 301/302 turn a POST into a GET.
        becomes_get = response.status == 303 and method != "HEAD"
        if becomes_get or (response.status in (301, 302) and method == "POST"):
            method, body = "GET", None
            current_headers = _without(current_headers, BODY_HEADERS)
        target = next_target
