"""Renewal against a real ACME CA (pebble): swapped in process, nothing dropped."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import threading
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
from cryptography import x509

from appliance.protocol.wire import Message, Status
from tests.certs.conftest import MakePebble
from tests.certs.live import (
    HOSTNAME,
    SERVING,
    acme_toml,
    cert_status,
    openssl_verify,
    start_server,
    wait_for_output,
    write_roots,
)
from tests.support.client import Client
from tests.support.provision import provision

pytestmark = pytest.mark.slow


class H2Client:
    """An HTTP/2 client (the `h2` library) on one TLS connection, verifying the chain."""

    def __init__(self, port: int, roots: Path) -> None:
        ctx = ssl.create_default_context(cafile=str(roots))
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname=HOSTNAME)
        assert self.sock.selected_alpn_protocol() == "h2"
        self.peer_cert = self.sock.getpeercert(binary_form=True)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.lock = threading.Lock()
        self.next_stream = 1

    def get(self, path: str) -> int:
        """One request on the same connection; returns the status."""
        with self.lock:
            stream, self.next_stream = self.next_stream, self.next_stream + 2
            self.conn.send_headers(stream, [(":method", "GET"), (":path", path),
                                            (":scheme", "https"), (":authority", HOSTNAME)],
                                   end_stream=True)
            self.sock.sendall(self.conn.data_to_send())
            status = 0
            while True:
                data = self.sock.recv(65536)
                assert data, "the server closed the HTTP/2 connection"
                for event in self.conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                        status = int(dict(event.headers)[b":status"])
                    if isinstance(event, h2.events.DataReceived):
                        self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                            event.stream_id)
                    if isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                        self.sock.sendall(self.conn.data_to_send())
                        return status
                self.sock.sendall(self.conn.data_to_send())

    def close(self) -> None:
        self.sock.close()


def not_after(pem: str) -> dt.datetime:
    return x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc


def test_renewal_swaps_the_certificate_while_clients_stay_connected(
        make_pebble: MakePebble, data_dir: Path, tmp_path: Path) -> None:
    # 60-second certificates renewed with 90 % of their lifetime left: a renewal
    # is due about six seconds after each issuance.
    pebble = make_pebble(validity_s=60)
    server = start_server(data_dir, pebble, acme_toml(
        pebble, challenge="tls-alpn-01", redirect=False, acme="renew_remaining = 0.9"))
    tokens, _ = provision(data_dir, ["alice", "bob"])
    h2c: H2Client | None = None
    try:
        wait_for_output(server, SERVING)
        roots = write_roots(pebble, tmp_path)
        first_leaf = openssl_verify(server.port, roots)
        first = cert_status(data_dir)
        h2c = client = H2Client(server.port, roots)

        async def exchange(alice: Client, bob: Client, msg_id: int) -> None:
            alice.send(Message(msg_id, b"bob", b"across the renewal"))
            assert (await alice.status()).status == Status.SENT
            got = await bob.message()
            assert (got.id, got.payload) == (msg_id, b"across the renewal")
            assert (await alice.status()).status == Status.DELIVERED

        async def go() -> None:
            tls = ssl.create_default_context(cafile=str(roots))
            alice = await Client.connect("127.0.0.1", server.port, tokens["alice"], "a1",
                                         tls=tls, server_hostname=HOSTNAME)
            bob = await Client.connect("127.0.0.1", server.port, tokens["bob"], "b1",
                                       tls=tls, server_hostname=HOSTNAME)
            try:
                await exchange(alice, bob, 1)
                assert await asyncio.to_thread(client.get, "/v1/health") == 200
                await asyncio.to_thread(wait_for_output, server, SERVING, 90.0, 2)
                # The same connections, after the swap: still exchanging.
                for msg_id in range(2, 12):
                    await exchange(alice, bob, msg_id)
                    assert await asyncio.to_thread(client.get, "/v1/health") == 200
            finally:
                await alice.close()
                await bob.close()

        asyncio.run(go())
        second_leaf = openssl_verify(server.port, roots)  # new connections: the new one
        assert second_leaf != first_leaf
        assert not_after(second_leaf) > not_after(first_leaf)
        second = cert_status(data_dir)
        assert int(str(second["version"])) > int(str(first["version"]))
        assert str(second["not_after"]) > str(first["not_after"])
        assert second["last_error"] is None
    finally:
        if h2c is not None:
            h2c.close()
        server.stop()
