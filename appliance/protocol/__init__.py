"""Sans-I/O protocol codecs: bytes in, events out; no asyncio, sockets or storage."""
