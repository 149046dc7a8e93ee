"""TLS on the shared port, in process (SPEC M12, M13).

The first bytes of a connection are already read when they turn out to be a
TLS ClientHello, so asyncio's `start_tls` (which wants an untouched socket)
cannot take over; instead an `ssl.SSLObject` over memory BIOs does the TLS
record work, and this class sits between the TCP transport and the protocol
inside: `WireProtocol` (which then tells native from HTTP/1.1 again, by the
first plaintext bytes) or, when ALPN chose ``h2``, the HTTP/2 handler.

Profile: TLS 1.2 and 1.3 only, AEAD ciphers only (ECDHE with AES-GCM or
ChaCha20-Poly1305), no compression, no renegotiation.  `TlsContexts.reload`
builds a new context from the files (SIGHUP); connections keep the one they
started with, new ones get the new certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from appliance.certs.challenges import ACME_TLS_ALPN, ChallengeAnswers, tls_alpn01_certificate
from appliance.certs.selfsigned import ensure_self_signed
from appliance.errors import ConfigError
from appliance.protocol.tls_hello import parse_client_hello, record_complete
from appliance.ratelimit import TokenBucket
from appliance.transport.bounds import HELD_BY_PROTOCOL
from appliance.transport.carrier import Carrier
from appliance.transport.tasks import spawn

log = logging.getLogger(__name__)

ALPN = ["h2", "http/1.1"]
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
_READ_CHUNK = 256 * 1024


def build_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context with the appliance's TLS profile.

    Raises:
        ConfigError: the certificate or key cannot be loaded (keys ``tls.cert``/``tls.key``).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(_TLS12_CIPHERS)  # TLS 1.3 suites are all AEAD already
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(ALPN)
    for path, key_path in ((cert, "tls.cert"), (key, "tls.key")):
        if not path.is_file():
            raise ConfigError(f"no such file: {path}", key_path=key_path)
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ConfigError(f"cannot load the certificate {cert} with the key {key}: {exc}",
                          key_path="tls.cert") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {exc.filename}: {exc.strerror}",
                          key_path="tls.key" if exc.filename == str(key) else "tls.cert") from None
    return ctx


#: Chooses the context for a ClientHello (its first record); None: the current one;
#: a future when the answer must first be read from the store.
ContextChooser = Callable[[bytes], "ssl.SSLContext | asyncio.Future[ssl.SSLContext | None] | None"]
#: Reads a challenge answer another process published (``tls-alpn-01:<hostname>``).
AnswerFetcher = Callable[[str], Awaitable[bytes | None]]
#: After the store had no answer for a name, it is not asked again for this long:
#: ClientHellos offering acme-tls/1 cost a store read each otherwise.
_MISS_HOLD_S = 1.0
#: Store reads for challenge answers (HTTP-01 tokens, TLS-ALPN-01 names), all
#: peers together: a CA's validation makes a handful of requests (one per
#: vantage point), a flood of made-up tokens on port 80 must not become a
#: flood of database reads.  Over budget, the answer is "no such challenge".
ANSWER_READS_PER_S, ANSWER_READS_BURST = 20.0, 50.0


def challenge_context(cert_pem: bytes, key_pem: bytes, directory: Path) -> ssl.SSLContext:
    """A context that answers a TLS-ALPN-01 validation (RFC 8737 §3): the challenge
    certificate, ALPN ``acme-tls/1`` only, TLS 1.2 or later."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols([ACME_TLS_ALPN])
    # `ssl` loads keys from files only: a private temporary file, gone at once.
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(dir=directory, prefix=".challenge-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem + cert_pem)
        ctx.load_cert_chain(name)
    finally:
        os.unlink(name)
    return ctx


class TlsContexts:
    """The current server context: configured files, the ACME certificate, or the
    self-signed pair; and the TLS-ALPN-01 challenge contexts while a CA validates."""

    def __init__(self, cert: str, key: str, data_dir: Path,
                 answers: ChallengeAnswers | None = None, *,
                 fetch_answer: AnswerFetcher | None = None,
                 hostnames: tuple[str, ...] = ()) -> None:
        self._data_dir = data_dir
        self.answers = answers
        #: With several processes or nodes on one store, the one that placed the
        #: order publishes its answers there; any of them may get the validation.
        self._fetch_from_store = fetch_answer
        self._reads = TokenBucket(0.0, ANSWER_READS_PER_S, ANSWER_READS_BURST)
        #: Budgeted store reads (None: this process alone answers validations).
        self.fetch_answer: AnswerFetcher | None = self._read_answer if fetch_answer else None
        self._inflight: dict[str, asyncio.Future[ssl.SSLContext | None]] = {}
        self._hostnames = frozenset(hostnames)
        self._missed: dict[str, float] = {}
        self._challenges: dict[str, tuple[object, ssl.SSLContext]] = {}
        if bool(cert) != bool(key):
            raise ConfigError("tls.cert and tls.key go together: set both or neither",
                              key_path="tls.key" if cert else "tls.cert")
        if cert:
            self.cert, self.key = Path(cert).expanduser(), Path(key).expanduser()
            self.self_signed = False
        else:
            self.cert, self.key = ensure_self_signed(data_dir / "tls")
            self.self_signed = True
        self.current = build_context(self.cert, self.key)

    def reload(self) -> None:
        """Load the files again (after a renewal); on error keep the old context.

        Raises:
            ConfigError: the new files do not load; the old context stays in use.
        """
        self.current = build_context(self.cert, self.key)

    async def _read_answer(self, name: str) -> bytes | None:
        """A published answer, within the server-wide read budget."""
        fetch = self._fetch_from_store
        if fetch is None or not self._reads.take(asyncio.get_running_loop().time()):
            return None
        return await fetch(name)

    def use(self, bundle: Path) -> None:
        """Serve the key and chain in `bundle` to new connections (an ACME certificate);
        open connections keep theirs (issue 13: swapped without dropping one).

        Raises:
            ConfigError: the file does not load; the old context stays in use.
        """
        context = build_context(bundle, bundle)
        self.cert = self.key = bundle
        self.self_signed = False
        self.current = context

    def chooser(self) -> ContextChooser | None:
        """A chooser when a TLS-ALPN-01 validation may come (ACME on), else None: without
        ACME no handshake pays for reading its ClientHello."""
        if self.answers is None:
            return None
        if self.answers.tls_alpn01 or self.fetch_answer is not None:
            return self._choose
        return None

    def _choose(self, hello: bytes
                ) -> ssl.SSLContext | asyncio.Future[ssl.SSLContext | None] | None:
        answers = self.answers
        if answers is None:
            return None
        offer = parse_client_hello(hello)
        if ACME_TLS_ALPN not in offer.alpn:
            return None
        name = offer.server_name
        pair = answers.tls_alpn01.get(name)
        if pair is not None:
            return self._context_for(name, pair, lambda: pair)
        if self.fetch_answer is None or name not in self._hostnames:
            return None
        loop = asyncio.get_running_loop()
        if loop.time() - self._missed.get(name, -_MISS_HOLD_S) < _MISS_HOLD_S:
            return None
        pending = self._inflight.get(name)
        if pending is not None:  # hellos arriving together share one read
            return pending
        future: asyncio.Future[ssl.SSLContext | None] = loop.create_future()
        self._inflight[name] = future
        future.add_done_callback(lambda _f: self._inflight.pop(name, None))
        spawn(self._fetch_context(name, future), name="tls-alpn-01-answer")
        return future

    async def _fetch_context(self, name: str,
                             future: asyncio.Future[ssl.SSLContext | None]) -> None:
        context = None
        try:
            assert self.fetch_answer is not None
            answer = await self.fetch_answer(f"tls-alpn-01:{name}")
            if answer is None:
                self._missed[name] = asyncio.get_running_loop().time()
            else:
                key_authorization = answer.decode("ascii")
                context = self._context_for(name, key_authorization,
                                            lambda: tls_alpn01_certificate(name,
                                                                           key_authorization))
        except Exception as exc:  # noqa: BLE001 - the store is away: not answered
            log.warning("TLS-ALPN-01 answer for %s not read: %s", name, exc)
        finally:
            if not future.done():
                future.set_result(context)

    def _context_for(self, name: str, key: object,
                     make: Callable[[], tuple[bytes, bytes]]) -> ssl.SSLContext | None:
        cached = self._challenges.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            cert_pem, key_pem = make()
            context = challenge_context(cert_pem, key_pem, self._data_dir / "tls")
        except (OSError, ssl.SSLError) as exc:
            log.error("TLS-ALPN-01 answer for %s not loadable: %s", name, exc)
            return None
        # Pending challenges are few (one per hostname) and short-lived.
        self._challenges = {k: v for k, v in self._challenges.items()
                            if k in self._hostnames or k in (self.answers.tls_alpn01
                                                              if self.answers else {})}
        self._challenges[name] = (key, context)
        return context


class TlsCarrier(Carrier):
    """The TCP transport's protocol, and the transport of the protocol inside.

    Until its handshake is done it is a connection of its own for the deadline
    scan (`handshake_timeout_s`); then the protocol inside takes over every
    deadline and bound, and this carrier forwards the TCP transport's flow
    signals to it (`Carrier`).
    """

    def __init__(self, tcp: asyncio.Transport, context: ssl.SSLContext,
                 inner_for: Callable[[TlsCarrier, str | None], asyncio.Protocol],
                 handshake_done: Callable[[TlsCarrier], None], now: float,
                 handshake_timeout_s: float, choose: ContextChooser | None = None) -> None:
        super().__init__(tcp)
        self._deadline = now + handshake_timeout_s
        self._handshake_done = handshake_done
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._inner_for = inner_for
        self._handshaken = False
        #: While a TLS-ALPN-01 challenge is pending: the ClientHello is read
        #: whole before the handshake starts, to pick the context (`TlsContexts`).
        self._choose = choose
        self._hello = b""
        self._waiting = False
        self._answering_challenge = False

    def check_deadline(self, now: float) -> None:
        """The deadline scan: a handshake not done in time is cut."""
        if not self._handshaken and now > self._deadline:
            self.close()

    # --- ciphertext from the peer ------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._choose is not None:
            data = self._choose_context(data)
            if not data:
                return
        self._incoming.write(data)
        if not self._handshaken and not self._handshake():
            return
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._ssl.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify
                chunk = b""
            except ssl.SSLError as exc:
                log.info("TLS error, closing: %s", exc.reason or exc)
                self._flush()
                self.abort()
                return
            if not chunk:  # the peer's close_notify: deliver what came before, answer it
                self._deliver(chunks)
                self.close()
                return
            chunks.append(chunk)
        self._flush()  # post-handshake messages (TLS 1.3 session tickets)
        self._deliver(chunks)

    def _choose_context(self, data: bytes) -> bytes:
        """Hold bytes until the first record is whole (at most one record: 16 KiB),
        then pick the context; returns what to feed the handshake (b"": wait)."""
        self._hello += data
        if self._waiting or not record_complete(self._hello):
            return b""
        choose = self._choose
        context = choose(self._hello) if choose is not None else None
        if isinstance(context, asyncio.Future):
            # The answer is in the store: read nothing more until it is here.
            self._waiting = True
            self._hold(HELD_BY_PROTOCOL)
            context.add_done_callback(self._context_read)
            return b""
        return self._use(context)

    def _use(self, context: ssl.SSLContext | None) -> bytes:
        hello, self._hello, self._choose = self._hello, b"", None
        if context is not None:
            self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
            self._answering_challenge = True
        return hello

    def _context_read(self, future: asyncio.Future[ssl.SSLContext | None]) -> None:
        self._waiting = False
        if self._tcp is None:
            return
        self._release(HELD_BY_PROTOCOL)
        context = None if future.cancelled() else future.result()
        hello = self._use(context)
        self.data_received(hello)

    def _handshake(self) -> bool:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except ssl.SSLError as exc:
            # Old protocol versions, no shared cipher, plaintext on the TLS port...
            log.info("TLS handshake refused: %s", exc.reason or exc)
            self._flush()  # the alert says why
            self.close()
            return False
        self._handshaken = True
        self._flush()
        self._handshake_done(self)
        if self._answering_challenge:
            # RFC 8737 §3: the validation closes after the handshake; nothing follows.
            log.info("answered a TLS-ALPN-01 validation")
            self.close()
            return False
        self.inner = self._inner_for(self, self._ssl.selected_alpn_protocol())
        self.inner.connection_made(self)  # type: ignore[arg-type]  # duck-typed transport
        return True

    def _deliver(self, chunks: list[bytes]) -> None:
        if chunks and self.inner is not None:
            self.inner.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._write_tcp(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._tcp = None
        self._handshake_done(self)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    # --- the transport the inner protocol writes to ----------------------------------------

    def write(self, data: bytes) -> None:
        if self._tcp is None or not self._handshaken:
            return
        try:
            self._ssl.write(data)
        except ssl.SSLError as exc:
            log.info("TLS write failed: %s", exc)
            self.abort()
            return
        self._flush()

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        """Several pieces, one TCP write: HTTP/1.1 passes a download's chunk
        through (`send_with_data_passthrough`) instead of copying it into one."""
        if self._tcp is None or not self._handshaken:
            return
        try:
            for data in chunks:
                self._ssl.write(data)
        except ssl.SSLError as exc:
            log.info("TLS write failed: %s", exc)
            self.abort()
            return
        self._flush()

    def finish(self) -> None:
        """See `Connection.finish`: a handshake goes on (the server's grace bounds it);
        what it carries learns that the server stops from the server."""

    def finished(self) -> bool:
        """See `Connection.finished`."""
        return self._tcp is None

    def close(self, code: int = 0, reason: str = "") -> None:
        """Close with close_notify (`code`, `reason`: the deadline scan's; unused)."""
        if self._tcp is None:
            return
        if self._handshaken:
            with contextlib.suppress(ssl.SSLError):
                self._ssl.unwrap()  # close_notify
        self._flush()
        self._close_tcp()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._ssl
        if name == "cipher":
            return self._ssl.cipher()
        return super().get_extra_info(name, default)
