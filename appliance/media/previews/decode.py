"""Response bodies: bounded decompression and the page's character encoding.

`BoundedDecoder` counts the body AFTER decompression and never produces
more than its limit (zlib's ``max_length``): a gzip bomb (1 GB of zeros is
1 MB compressed) costs at most the limit in memory and CPU, not its
expansion.  Only the codings RFC 9110 §8.4.1 defines for zlib are accepted.

`charset` follows the HTML standard's order (§13.2.3.2, simplified): a byte
order mark, the Content-Type header's ``charset``, a ``<meta charset>`` or
``http-equiv`` in the first 1024 bytes, else UTF-8; undecodable bytes
become U+FFFD.  Only the encodings of the WHATWG Encoding Standard are
honoured, any other label is ignored (§4.2 "get an encoding": failure):
Python's codec registry also holds ``punycode``, whose decoder is quadratic
(a 1 MiB page held a thread for minutes), and ``idna`` and ``undefined``,
which raise whatever the error handler.
"""

from __future__ import annotations

import codecs
import re
import zlib

from appliance.errors import PreviewFetchError

#: Bytes of a page searched for a <meta> charset (HTML §13.2.3.2 "prescan").
PRESCAN_BYTES = 1024

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_RAW_DEFLATE_WBITS = -zlib.MAX_WBITS

_META_CHARSET_RE = re.compile(
    rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{1,40})""", re.IGNORECASE)
_HEADER_CHARSET_RE = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9_.:-]{1,40})""", re.IGNORECASE)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
         (codecs.BOM_UTF16_BE, "utf-16-be"))
# The HTML standard's label table maps these to windows-1252 (a superset), and
# refuses UTF-7 (it smuggles markup past filters).
_ALIASES = {"iso-8859-1": "cp1252", "latin-1": "cp1252", "latin1": "cp1252",
            "ascii": "cp1252", "us-ascii": "cp1252", "utf-7": "utf-8",
            "iso8859-1": "cp1252", "utf-16": "utf-16-le", "windows-874": "cp874",
            "x-mac-cyrillic": "mac-cyrillic"}
#: The WHATWG Encoding Standard's encodings (§4.2's table), as Python names them: C or
#: charmap decoders, linear in the input, that never raise with errors="replace".
WEB_CODECS = frozenset((
    "utf-8", "utf-16-le", "utf-16-be", "cp866", "iso8859-2", "iso8859-3", "iso8859-4",
    "iso8859-5", "iso8859-6", "iso8859-7", "iso8859-8", "iso8859-10", "iso8859-11",
    "iso8859-13", "iso8859-14", "iso8859-15", "iso8859-16", "koi8-r", "koi8-u", "mac-roman",
    "mac-cyrillic", "cp874", "tis-620", "cp1250", "cp1251", "cp1252", "cp1253", "cp1254",
    "cp1255", "cp1256", "cp1257", "cp1258", "gbk", "gb2312", "gb18030", "big5", "big5hkscs",
    "euc_jp", "iso2022_jp", "shift_jis", "cp932", "euc_kr", "cp949"))


class BoundedDecoder:
    """Content-decodes a body chunk by chunk; `exceeded` once it is over `limit`.

    `feed` returns at most what fits under `limit`; the rest is never
    decompressed.  The caller stops reading when `exceeded` is set.
    """

    __slots__ = ("_coding", "_members", "_zlib", "exceeded", "limit", "total")

    def __init__(self, content_encoding: str, limit: int) -> None:
        coding = content_encoding.strip().lower()
        if coding == "x-gzip":  # RFC 9110 §8.4.1.3
            coding = "gzip"
        if coding not in ("", "identity", "gzip", "deflate"):
            raise PreviewFetchError(f"content coding {coding[:20]!r} is not accepted"
                                    " (gzip and deflate only)")
        self._coding = "" if coding == "identity" else coding
        self._zlib: zlib._Decompress | None = None
        self._members = 0
        self.limit = limit
        self.total = 0
        self.exceeded = False

    def feed(self, data: bytes) -> bytes:
        """The decoded bytes of `data` that fit under the limit.

        Raises:
            PreviewFetchError: the compressed stream is damaged.
        """
        if self.exceeded or not data:
            return b""
        if not self._coding:
            return self._take(data)
        if self._coding == "junk":
            return b""
        out = bytearray()
        while data and not self.exceeded:
            if self._zlib is None:
                self._zlib = zlib.decompressobj(self._wbits(data))
                self._members += 1
            room = self.limit - self.total + 1  # one byte more tells "over the limit"
            try:
                chunk = self._zlib.decompress(data, room)
            except zlib.error:
                if self._members > 1:  # junk after a whole gzip member: ignored, as browsers do
                    self._coding, self._zlib = "junk", None
                    break
                raise PreviewFetchError(f"damaged {self._coding} body") from None
            out += self._take(chunk)
            data = self._zlib.unconsumed_tail
            if self._zlib.eof:
                # Another gzip member may follow (RFC 1952 §2.2); what follows a
                # deflate stream is junk, ignored as browsers do.
                data, self._zlib = self._zlib.unused_data, None
                if self._coding != "gzip":
                    self._coding = "junk"
                    break
        return bytes(out)

    @property
    def truncated(self) -> bool:
        """Whether the compressed stream stopped in the middle (a cut body)."""
        return self._zlib is not None and not self._zlib.eof

    def _wbits(self, data: bytes) -> int:
        if self._coding == "gzip":
            return _GZIP_WBITS
        # "deflate" is zlib-wrapped (RFC 9110 §8.4.1.2) but some servers send raw
        # deflate: a zlib header is CM 8 and a multiple of 31 (RFC 1950 §2.2).
        if len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0:
            return zlib.MAX_WBITS
        return _RAW_DEFLATE_WBITS

    def _take(self, chunk: bytes) -> bytes:
        room = self.limit - self.total
        if len(chunk) > room:
            self.exceeded = True
            chunk = chunk[:room]
        self.total += len(chunk)
        return chunk


def header_charset(content_type: str) -> str | None:
    """The ``charset`` parameter of a Content-Type header, if it names a text codec."""
    match = _HEADER_CHARSET_RE.search(content_type)
    return _codec(match.group(1)) if match else None


def decode_html(body: bytes, content_type: str) -> str:
    """`body` as text, in the encoding the HTML standard would pick (simplified)."""
    for bom, bom_codec in _BOMS:
        if body.startswith(bom):
            return body[len(bom):].decode(bom_codec, "replace")
    name = header_charset(content_type)
    if name is None:
        match = _META_CHARSET_RE.search(body, 0, PRESCAN_BYTES)
        name = _codec(match.group(1).decode("ascii")) if match else None
        if name in ("utf-16", "utf-16-le", "utf-16-be"):
            name = "utf-8"  # a meta tag readable as ASCII cannot be UTF-16 (HTML §13.2.3.2)
    return body.decode(name or "utf-8", "replace")


def _codec(label: str) -> str | None:
    label = label.strip().lower()
    label = _ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except LookupError:
        return None
    name = _ALIASES.get(info.name, info.name)
    # Not an encoding of the web (rot13, punycode, idna, utf-32...): ignored, as a
    # browser ignores a label it does not know.
    return name if name in WEB_CODECS else None
