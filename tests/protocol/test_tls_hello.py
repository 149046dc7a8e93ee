"""The ClientHello reader that routes TLS-ALPN-01 validations (RFC 8737), on real hellos."""

from __future__ import annotations

import ssl

import pytest

from appliance.protocol.tls_hello import parse_client_hello, record_complete


def client_hello(server_name: str | None, alpn: list[str] | None) -> bytes:
    """The first flight of Python's own TLS client (OpenSSL), as it goes on the wire."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_reads_the_server_name_and_alpn_of_a_real_hello() -> None:
    hello = client_hello("chat.example.org", ["acme-tls/1"])
    assert record_complete(hello)
    offer = parse_client_hello(hello)
    assert offer.server_name == "chat.example.org"
    assert offer.alpn == ("acme-tls/1",)


def test_several_alpn_names_and_no_server_name() -> None:
    offer = parse_client_hello(client_hello(None, ["h2", "http/1.1"]))
    assert offer == type(offer)("", ("h2", "http/1.1"))


def test_an_incomplete_record_waits() -> None:
    hello = client_hello("a.example", ["acme-tls/1"])
    assert not record_complete(hello[:4])
    assert not record_complete(hello[:-1])
    assert record_complete(hello + b"more")


@pytest.mark.parametrize("cut", [1, 5, 6, 40, 44, 80, 120])
def test_truncated_or_garbled_hellos_offer_nothing(cut: int) -> None:
    hello = client_hello("a.example", ["acme-tls/1"])
    offer = parse_client_hello(hello[:cut])
    assert offer.alpn in ((), ("acme-tls/1",))  # never an exception, never garbage
    garbled = bytearray(hello)
    garbled[cut] ^= 0xFF
    parse_client_hello(bytes(garbled))  # must not raise


def test_not_a_hello() -> None:
    assert parse_client_hello(b"GET / HTTP/1.1\r\n\r\n").alpn == ()
    assert parse_client_hello(b"").server_name == ""
