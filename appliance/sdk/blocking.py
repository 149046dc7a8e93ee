"""Blocking and presence privacy for the SDK's `Client`: over HTTP, with the device's
access token (issue 16).

    await client.block("mallory")      # no more messages, typing or presence between us
    await client.blocked()             # ["mallory"]
    await client.unblock("mallory")
    await client.set_presence_privacy("contacts")   # everyone, contacts or nobody

A block is the user's, on every device: the blocked user's 1:1 messages are
answered BLOCKED (`BlockedError`), its group messages skip this user, and it
sees nothing of this user's presence.  Who sees this user's presence is its
privacy: everyone, its contacts (the app declares them), or nobody.  The calls
go to ``/v1/blocks`` and ``/v1/privacy`` on the server's port (the same as the
native protocol), one short request each.
"""

from __future__ import annotations

import json
import ssl as ssl_module
import unicodedata
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from appliance.sdk.errors import ClientError, NoSuchUserError, RequestError

if TYPE_CHECKING:
    from appliance.sdk.http import Response

#: The answer to ``GET /v1/blocks`` is at most this long (10,000 addresses of 64 bytes).
_MAX_LIST_BYTES = 1 << 20
#: Who may see a user's presence (PROTOCOL.md §8.2).
PRIVACY = ("everyone", "contacts", "nobody")


class BlockingFeatures:
    """The blocking half of `Client` (a mixin: the client holds the server's address)."""

    host: str
    port: int
    ssl: ssl_module.SSLContext | None
    connect_timeout_s: float
    _token: bytes

    async def block(self, address: str) -> None:
        """Block the user at `address` (nothing changes if it is blocked already).

        Raises:
            NoSuchUserError: no such user in this app.
            RequestError: the server refused (`http_status`) or could not be reached.
        """
        await self._blocks("PUT", address)

    async def unblock(self, address: str) -> None:
        """Unblock the user at `address` (nothing changes if it was not blocked).

        Raises:
            NoSuchUserError: no such user in this app.
            RequestError: the server refused (`http_status`) or could not be reached.
        """
        await self._blocks("DELETE", address)

    async def blocked(self) -> list[str]:
        """The addresses this user blocks, in address order.

        Raises:
            RequestError: the server refused (`http_status`) or could not be reached.
        """
        doc = await self._blocks("GET", None)
        found = doc.get("blocks") if isinstance(doc, dict) else None
        if not isinstance(found, list) or not all(isinstance(a, str) for a in found):
            raise RequestError("the server sent no list of blocks")
        return found

    async def presence_privacy(self) -> str:
        """Who may see this user's presence: "everyone", "contacts" or "nobody".

        Raises:
            RequestError: the server refused (`http_status`) or could not be reached.
        """
        doc = await self._call("GET", "/v1/privacy")
        value = doc.get("presence") if isinstance(doc, dict) else None
        if value not in PRIVACY:
            raise RequestError("the server sent no privacy setting")
        return str(value)

    async def set_presence_privacy(self, who: str) -> None:
        """Let "everyone", only this user's "contacts" (the app declares them), or
        "nobody" see its presence; watchers that may no longer see it are told at once.

        Raises:
            ValueError: another value.
            RequestError: the server refused (`http_status`) or could not be reached.
        """
        if who not in PRIVACY:
            raise ValueError(f"privacy is one of {', '.join(PRIVACY)}")
        await self._call("PUT", "/v1/privacy", json.dumps({"presence": who}).encode())

    async def _blocks(self, method: str, address: str | None) -> Any:
        target = "/v1/blocks"
        if address is not None:
            target += "/" + quote(unicodedata.normalize("NFC", address), safe="")
        return await self._call(method, target)

    async def _call(self, method: str, target: str, body: bytes = b"") -> Any:
        try:  # imported here: h11 is needed for the HTTP calls only, as for files
            from appliance.sdk.http import Endpoint, HttpConnection
        except ImportError:
            raise ClientError("blocking needs h11: pip install h11") from None
        endpoint = Endpoint(self.host, self.port, self._token, self.ssl, self.connect_timeout_s)
        headers = [(b"content-type", b"application/json")] if body else []
        try:
            conn = await HttpConnection.open(endpoint)
            try:
                response = await conn.request(method, target, headers, body=body)
                body = await conn.document(_MAX_LIST_BYTES)
            finally:
                conn.close()
        except RequestError:
            raise
        except ClientError as exc:  # the connection failed (TransferInterruptedError...)
            raise RequestError(f"{method} {target}: {exc}") from None
        return _answer(method, target, response, body)


def _answer(method: str, target: str, response: Response, body: bytes) -> Any:
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
    if response.status < 300:
        return doc
    problem = doc if isinstance(doc, dict) else {}
    title = str(problem.get("title", ""))[:200]
    detail = str(problem.get("detail", ""))[:1000]
    cls = NoSuchUserError if response.status == 404 else RequestError
    raise cls(f"{method} {target}: HTTP {response.status} {title}: {detail}"[:400],
              http_status=response.status, title=title, detail=detail)
