"""Counting an HTTP/2 client's control frames before h2 parses them (sans-I/O).

h2 answers PING and SETTINGS by itself and costs ~15 us per frame in Python:
a client that floods them takes a core and the latency of everyone else
(issue 12 finding 4; CVE-2019-9512 "ping flood", CVE-2019-9515 "settings
flood").  nghttp2 and Go's x/net/http2 bound such frames per connection; so
do we, by reading only the 9-byte frame headers (RFC 9113 §4.1) as bytes
arrive, so that a flood is refused before h2 spends anything on it.

Counted as control frames: PING, SETTINGS, WINDOW_UPDATE, PRIORITY,
RST_STREAM, frames of unknown types, and DATA or HEADERS/CONTINUATION with an
empty payload that do not end a stream (they carry nothing but cost a parse:
CVE-2019-9518).
"""

from __future__ import annotations

#: RFC 9113 §3.4: what a client sends first.
CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
_PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
_END_STREAM = 0x1
_ALWAYS_CONTROL = frozenset((_PRIORITY, _RST_STREAM, _SETTINGS, _PING, _WINDOW_UPDATE))
_KNOWN = frozenset(range(0xA))
_EMPTY_COUNTS = frozenset((_DATA, _HEADERS, _CONTINUATION))


class ControlFrameCounter:
    """Feed it what the client sends; it says how many control frames that held."""

    __slots__ = ("_head", "_preface", "_skip")

    def __init__(self) -> None:
        self._preface = len(CLIENT_PREFACE)  # bytes of the preface still to pass over
        self._skip = 0  # payload bytes of the current frame still to pass over
        self._head = b""  # a frame header split across reads

    def feed(self, data: bytes) -> int:
        """Count the control frames whose headers `data` completes."""
        pos, end = 0, len(data)
        if self._preface:
            taken = min(self._preface, end)
            self._preface -= taken
            pos = taken
        count = 0
        while pos < end:
            if self._skip:
                taken = min(self._skip, end - pos)
                self._skip -= taken
                pos += taken
                continue
            if self._head:
                need = 9 - len(self._head)
                head = self._head + data[pos:pos + need]
                pos += min(need, end - pos)
                if len(head) < 9:
                    self._head = head
                    break
                self._head = b""
            elif end - pos < 9:
                self._head = data[pos:end]
                break
            else:
                head = data[pos:pos + 9]
                pos += 9
            length = int.from_bytes(head[:3], "big")
            ftype, flags = head[3], head[4]
            if ftype in _ALWAYS_CONTROL or ftype not in _KNOWN or (
                    length == 0 and ftype in _EMPTY_COUNTS and not flags & _END_STREAM):
                count += 1
            self._skip = length
        return count
