"""Media (SPEC M9, issue 15): files, images and URL previews.

* `config` — ``[media]`` and ``[media.previews]``.
* `ids` — file ids (128 random bits, base32).
* `blobs` — the content-addressed blob store interface and its disk backend.
* `files`, `tus`, `ranges`, `signing`, `pictures` — uploads (one-shot and tus 1.0),
  downloads (RFC 9110 ranges), signed links, profile and group pictures.
* `images/` — Pillow, in worker processes with a bounded queue and a time limit.
* `previews/` — link previews, fetched by an SSRF-safe client.
* `sweep` — removes files nothing references any more, then their blobs.

Nothing here touches sockets of the server's own (that is `transport`) or
speaks HTTP to clients (that is `api`); storage is reached through
`appliance.storage.interface` only.
"""
