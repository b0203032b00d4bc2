"""The SSRF guard's decisions; only IP literals and 'localhost', so no DNS or network is needed."""

from __future__ import annotations

import ipaddress

import pytest

from services.errors import BlockedUrl
from services.netguard import Target, redact_url, resolve_public_target

REFUSED_ADDRESSES = [
    "http://127.0.0.1/",
    "http://localhost/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.1.1/",  # the rest of link-local, not only the metadata address
    "http://[fd12:3456::1]/",  # unique local, the fd00::/8 half of fc00::/7
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://[::1]/",
    "http://[fc00::1]/",
    "http://[fe80::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://100.64.0.1/",  # carrier-grade NAT, not public
    "http://255.255.255.255/",
    "http://[::]/",
    "http://[ff02::1]/",
    "http://[2002:7f00:1::1]/",  # 6to4 wrapping 127.0.0.1
    "http://[::ffff:169.254.169.254]/",
    # Alternative spellings the resolver turns into 127.0.0.1.
    "http://2130706433/",
    "http://0x7f000001/",
    "http://127.1/",
]

REFUSED_URLS = [
    "file:///etc/passwd",
    "gopher://93.184.215.14:70/_",
    "ftp://93.184.215.14/file",
    "http://user:pw@example.com/",
    "http://user@93.184.215.14/",
    "javascript:alert(1)",
    "//93.184.215.14/relative",
    "http:///no-host",
    "http://93.184.215.14:99999/",
    "http://93.184.215.14:0/",
    "http://93.184.215.14\\@127.0.0.1/",
    "http://93.184.215.14/ path",
]


@pytest.mark.parametrize("url", REFUSED_ADDRESSES)
def test_non_public_addresses_are_refused(url: str) -> None:
    with pytest.raises(BlockedUrl) as caught:
        resolve_public_target(url)
    assert caught.value.code == "blocked_url"
    assert "non-public address" in caught.value.message
    assert not caught.value.transient


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_other_schemes_credentials_and_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(BlockedUrl):
        resolve_public_target(url)


def test_public_address_resolves_to_a_target() -> None:
    target = resolve_public_target("https://93.184.215.14/a/b?x=1&y=2#fragment")
    assert target == Target(
        scheme="https", host="93.184.215.14", port=443, ip="93.184.215.14", path="/a/b?x=1&y=2"
    )
    assert target.host_header == "93.184.215.14"


def test_public_ipv6_address_keeps_brackets_in_host_header() -> None:
    target = resolve_public_target("http://[2606:4700:4700::1111]:8080")
    assert target.ip == "2606:4700:4700::1111"
    assert target.path == "/"
    assert target.host_header == "[2606:4700:4700::1111]:8080"


def test_allow_list_opens_loopback() -> None:
    target = resolve_public_target("http://127.0.0.1:8080/x?y=1", ["127.0.0.0/8"])
    assert (target.scheme, target.host, target.port, target.ip, target.path) == (
        "http",
        "127.0.0.1",
        8080,
        "127.0.0.1",
        "/x?y=1",
    )
    assert target.host_header == "127.0.0.1:8080"


def test_allow_list_covers_the_ipv4_inside_a_mapped_address() -> None:
    target = resolve_public_target("http://[::ffff:127.0.0.1]/", ["127.0.0.0/8"])
    assert ipaddress.ip_address(target.ip) == ipaddress.ip_address("::ffff:127.0.0.1")


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1/", "http://169.254.169.254/", "http://[::1]/", "http://192.168.1.1/"]
)
def test_allow_list_opens_only_what_it_names(url: str) -> None:
    with pytest.raises(BlockedUrl):
        resolve_public_target(url, ["127.0.0.0/8"])


def test_allow_list_narrower_than_the_address_still_refuses() -> None:
    resolve_public_target("http://127.0.0.2/", ["127.0.0.2/32"])
    with pytest.raises(BlockedUrl):
        resolve_public_target("http://127.0.0.1/", ["127.0.0.2/32"])


def test_redact_url_drops_credentials_query_and_fragment() -> None:
    assert redact_url("https://u:p@cdn.example.com:8443/v.mp4?X-Amz-Signature=abc#t") == (
        "https://cdn.example.com:8443/v.mp4"
    )
