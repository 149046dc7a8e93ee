"""The optional plain-HTTP listener (usually port 80) that sends browsers to HTTPS.

Every request is answered ``308 Permanent Redirect`` to the same host and
path on the TLS port (RFC 9110 §15.4.9: the method and body are kept), except
the ACME manager's HTTP-01 answers: ``GET /.well-known/acme-challenge/<token>``
while a CA validates (RFC 8555 §8.3; the CA follows no redirect to a port
other than 80 or 443, so they are answered here, in clear).
Bounded like the main port's HTTP: 16 KiB of headers, one request at a time,
closed after the answer, a deadline for the request; a client that does not
read is not read from, and its answer is dropped after a grace period.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import h11

from appliance.certs.challenges import ChallengeAnswers, http01_token
from appliance.transport.bounds import (
    MAX_HEADER_BYTES,
    SERVER_HEADER,
    close_within,
    set_write_limits,
)
from appliance.transport.tasks import spawn

log = logging.getLogger(__name__)

#: Reads an answer another process published (``http-01:<token>``).
AnswerFetcher = Callable[[str], Awaitable[bytes | None]]

#: The request must arrive within this many seconds (the main port's default
#: `request_timeout_s`; this listener has no configuration of its own).
_REQUEST_TIMEOUT_S = 10.0
#: Its only output is one small answer: anything beyond is a peer not reading.
_HIGH_WATER_BYTES = 16 * 1024


class RedirectProtocol(asyncio.Protocol):
    """Answers one request with a redirect to ``https://<host>:<tls_port><target>``."""

    def __init__(self, tls_port: int, answers: ChallengeAnswers | None = None,
                 fetch: AnswerFetcher | None = None, *, challenges_only: bool = False) -> None:
        self._tls_port = tls_port
        #: A client outside the allow list: ACME's challenge answers, nothing else.
        self._challenges_only = challenges_only
        self._answers = answers
        self._fetch = fetch
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        set_write_limits(transport, _HIGH_WATER_BYTES)
        self._timer = asyncio.get_running_loop().call_later(_REQUEST_TIMEOUT_S, self._close)

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()  # it answers once, then closes: nothing to resume

    def resume_writing(self) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return  # answered: whatever else arrives is dropped
        self._h11.receive_data(data)
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError:
            self._answer(400, b"")
            return
        if isinstance(event, h11.Request):
            if self._answers is not None and event.method in (b"GET", b"HEAD"):
                token = http01_token(event.target)
                if token is not None:
                    self._answer_challenge(token, event.method == b"GET")
                    return
            if self._challenges_only:
                self._answer(403, b"")  # not in the allow list: no redirect either
                return
            headers = dict(event.headers)
            host = headers.get(b"host", b"").decode("latin-1").strip()
            if not host or any(c in host for c in "/\\@ "):
                self._answer(400, b"")
                return
            if host.startswith("["):  # [v6]:port
                name = host[:host.index("]") + 1] if "]" in host else host
            else:
                name = host.rsplit(":", 1)[0]
            port = "" if self._tls_port == 443 else f":{self._tls_port}"
            self._answer(308, f"https://{name}{port}".encode() + event.target)

    def _answer_challenge(self, token: bytes, with_body: bool) -> None:
        """RFC 8555 §8.3: 200 with the key authorization, from this process or the store."""
        assert self._answers is not None
        body = self._answers.http01.get(token)
        if body is None and self._fetch is not None:
            self._transport_pause()
            spawn(self._answer_fetched(token, with_body), name="http-01-answer")
            return
        self._answer_key_authorization(body, with_body)

    async def _answer_fetched(self, token: bytes, with_body: bool) -> None:
        assert self._fetch is not None
        try:
            body = await self._fetch(f"http-01:{token.decode('ascii')}")
        except Exception as exc:  # noqa: BLE001 - the store is away: not answered
            log.warning("HTTP-01 answer not read: %s", exc)
            body = None
        self._answer_key_authorization(body, with_body)

    def _answer_key_authorization(self, body: bytes | None, with_body: bool) -> None:
        if body is None:
            self._answer(404, b"")
        else:
            self._answer(200, b"", body if with_body else b"", len(body))

    def _transport_pause(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def _answer(self, status: int, location: bytes, body: bytes = b"",
                length: int = 0) -> None:
        transport = self._transport
        if transport is None:
            return
        headers = [(b"server", SERVER_HEADER), (b"content-length", str(length).encode()),
                   (b"connection", b"close")]
        if location:
            headers.append((b"location", location))
        if length:
            headers.append((b"content-type", b"application/octet-stream"))
        try:
            data = self._h11.send(h11.Response(status_code=status, headers=headers))
            if body:
                data += self._h11.send(h11.Data(data=body)) or b""
            data += self._h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            data = b""
        transport.write(data or b"")
        self._close()

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        transport, self._transport = self._transport, None
        if transport is not None:
            close_within(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._close()
