"""The hostname's form and whether it points at this machine (real resolver, real bind)."""

from __future__ import annotations

import pytest

from appliance.errors import AnswerError
from appliance.setup.hostname import check_syntax, is_local, resolve, special_use


def test_a_hostname_is_lower_cased_and_loses_its_trailing_dot() -> None:
    assert check_syntax(" Chat.Example.COM. ") == "chat.example.com"


@pytest.mark.parametrize("raw", ["", "10.0.0.1", "[::1]", "localhost", "a.localhost", "one",
                                 "-bad.example.com", "under_score.example.com",
                                 "*.example.com", "a" * 64 + ".example.com"])
def test_what_is_not_a_public_dns_name_is_refused(raw: str) -> None:
    with pytest.raises(AnswerError) as caught:
        check_syntax(raw)
    assert caught.value.question == "hostname"
    assert "--hostname" in caught.value.fix


def test_only_this_machines_addresses_are_local() -> None:
    assert is_local("127.0.0.1")
    assert not is_local("192.0.2.1")  # TEST-NET-1 (RFC 5737): never configured here


def test_a_name_resolving_only_to_loopback_is_not_reachable_from_elsewhere() -> None:
    found = resolve("localhost")
    assert "127.0.0.1" in found.addresses
    assert found.local == ()
    problem = found.problem("localhost")
    assert problem is not None
    assert "only to loopback" in problem


def test_a_name_that_does_not_resolve_says_so() -> None:
    found = resolve("no-such-name.invalid")
    assert found.addresses == ()
    assert found.problem("no-such-name.invalid") == (
        "no-such-name.invalid does not resolve (no A/AAAA record yet?)")


def test_special_use_names_are_known() -> None:
    assert special_use("chat.internal")
    assert special_use("box.home.arpa")
    assert not special_use("chat.example.com")
