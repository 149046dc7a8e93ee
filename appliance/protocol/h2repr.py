"""hyperframe's frame repr, made to cost the same for a frame of any size.

h2 formats every frame it receives for a trace log line whether or not
anyone logs (h2 4.4.1 `H2Connection._receive_frame`: ``logger.trace("Received
frame: %s", repr(frame))``), and hyperframe 6.1's repr hex-encodes the whole
body before keeping its first 10 bytes (`hyperframe.frame._raw_data_repr`).
A client sending request bodies in 16 KiB DATA frames made the server spend
~8 % of its event loop on text nobody reads (py-spy, a flood of 23 KB POSTs).
`_first_bytes_repr` gives the same text from the first 11 bytes.  Patched
where hyperframe looks the function up (its module globals), once, on import
of this module by the HTTP/2 transport.
"""

from __future__ import annotations

import binascii

import hyperframe.frame

#: What hyperframe shows of a body: its first `SHOWN` bytes, then "..." if more.
SHOWN = 10


def _first_bytes_repr(data: bytes | None) -> str:
    """``hyperframe.frame._raw_data_repr``, reading at most `SHOWN` bytes of `data`."""
    if not data:
        return "None"
    shown = binascii.hexlify(data[:SHOWN]).decode("ascii")
    return f"<hex:{shown}...>" if len(data) > SHOWN else f"<hex:{shown}>"


ORIGINAL_REPR = hyperframe.frame._raw_data_repr
hyperframe.frame._raw_data_repr = _first_bytes_repr
