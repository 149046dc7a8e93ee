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
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.certs.selfsigned import ensure_self_signed
from appliance.errors import ConfigError
from appliance.transport.carrier import Carrier

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


class TlsContexts:
    """The current server context: configured files, or the self-signed pair."""

    def __init__(self, cert: str, key: str, data_dir: Path) -> None:
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
                 handshake_timeout_s: float) -> None:
        super().__init__(tcp)
        self._deadline = now + handshake_timeout_s
        self._handshake_done = handshake_done
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._inner_for = inner_for
        self._handshaken = False

    def check_deadline(self, now: float) -> None:
        """The deadline scan: a handshake not done in time is cut."""
        if not self._handshaken and now > self._deadline:
            self.close()

    # --- ciphertext from the peer ------------------------------------------------------

    def data_received(self, data: bytes) -> None:
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
