"""A second process on the store, running the real certificate manager and serving TLS.

Why a stand-in: `tidings serve` holds the database's single-writer lock until
the cluster lands (SPEC M15: message counters live in one process), so two
servers cannot share one database yet; the certificate manager's lease is
what the cluster will rely on, and this process exercises it for real (the
manager, `TlsContexts`, the store) beside a real `tidings serve`.

Invoked as ServerProcess invokes `tidings`:
``python -m tests.certs.cert_worker --config C --data-dir D serve --port 0``;
prints ``listening on 127.0.0.1:<port>`` once it serves TLS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import ssl
from pathlib import Path

from appliance.certs.challenges import ChallengeAnswers
from appliance.certs.manager import CertificateManager
from appliance.config import load_config
from appliance.engine.clock import SystemClock
from appliance.storage import open_storage
from appliance.transport.tls import TlsContexts


async def main(config_path: Path, data_dir: Path, port: int) -> None:
    config = load_config(config_path, {"storage.data_dir": data_dir})
    clock = SystemClock()
    store = await open_storage(config.storage, clock.wall_ms())  # not the server's lock
    answers = ChallengeAnswers()
    tls = TlsContexts("", "", data_dir, answers,
                      fetch_answer=lambda name: store.challenge_answer(name, clock.wall_ms()),
                      hostnames=config.acme.hostnames)
    manager = CertificateManager(config.acme, store, data_dir, tls.use, answers,
                                 http01_available=False, now_ms=clock.wall_ms)

    def sni(sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        sslobj.context = tls.current  # the newest certificate for each new connection

    base = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    base.load_cert_chain(tls.cert, tls.key)
    base.sni_callback = sni
    loop = asyncio.get_running_loop()
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", port, ssl=base)
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    try:
        await manager.run()
    finally:
        server.close()
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("command")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.config, args.data_dir, args.port))
