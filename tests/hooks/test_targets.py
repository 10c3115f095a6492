"""Webhook targets: URL form, and the address check that keeps deliveries off loopback,
private, link-local and reserved addresses unless an operator allows them."""

from __future__ import annotations

import ipaddress

import pytest

from hooks.targets import TargetRefused, address_refusal, target_resolve, url_parse


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("fd00::1", "private"),
    ("169.254.169.254", "link-local"),  # cloud metadata
    ("fe80::1", "link-local"),
    ("0.0.0.0", "unspecified"),  # noqa: S104  an address under test, not a bind
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("100.64.0.1", "reserved"),  # carrier-grade NAT, shared address space
    ("240.0.0.1", "reserved"),
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
    ("::ffff:10.0.0.1", "private"),
    ("2002:7f00:1::", "loopback"),  # 6to4 around 127.0.0.1
    ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 around 169.254.169.254
])
def test_non_public_addresses_are_refused(address, reason):
    refusal = address_refusal(ipaddress.ip_address(address))
    assert refusal is not None and reason in refusal


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert address_refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(("url", "fragment"), [
    ("", "Give the URL"),
    ("ftp://93.184.216.34/x", "https://"),
    ("javascript:alert(1)", "https://"),
    ("not a url", "spaces"),
    ("http://", "no host"),
    ("https://user:pw@93.184.216.34/", "user name or password"),
    ("https://93.184.216.34:99999/", "port"),
    ("https://93.184.216.34:0/", "port"),
    ("https://93.184.216.34/a\nb", "control"),
    ("https://" + "a" * 2000 + ".com/", "longer than 2000"),
    ("https://" + "a" * 64 + ".example.com/", "not a valid host name"),
])
def test_malformed_urls_are_refused_with_a_reason(url, fragment):
    with pytest.raises(TargetRefused) as caught:
        url_parse(url)
    assert fragment in caught.value.message


def test_the_pinned_url_keeps_the_path_query_and_host_header():
    target = url_parse("https://hooks.example.com:8443/in/x?token=1")
    assert target.url_for("93.184.216.34") == "https://93.184.216.34:8443/in/x?token=1"
    assert target.url_for("2606:4700::1") == "https://[2606:4700::1]:8443/in/x?token=1"
    assert target.host_header == "hooks.example.com:8443"
    assert url_parse("http://hooks.example.com").host_header == "hooks.example.com"


def test_names_are_resolved_and_every_address_checked(settings):
    settings.SWITCHYARD_WEBHOOKS_ALLOW_PRIVATE = False
    with pytest.raises(TargetRefused, match="loopback"):
        target_resolve("http://localhost/hooks")
    with pytest.raises(TargetRefused, match="loopback"):
        target_resolve("http://2130706433/hooks")  # 127.0.0.1 as one number
    with pytest.raises(TargetRefused, match="does not resolve"):
        target_resolve("https://no-such-host.invalid/hooks")
    assert target_resolve("https://93.184.216.34/x").addresses == ["93.184.216.34"]


def test_private_addresses_pass_when_allowed(settings):
    settings.SWITCHYARD_WEBHOOKS_ALLOW_PRIVATE = True
    assert target_resolve("http://127.0.0.1:9/x").addresses == ["127.0.0.1"]
