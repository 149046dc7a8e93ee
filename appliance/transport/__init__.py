"""The only layer that touches asyncio, sockets and (later) TLS."""
