"""How the `tidings` command logs: one line per record, and never a secret.

SPEC M13 / issue 12 (finding 8): with ``--debug`` the hpack and h2 loggers
wrote every request header at DEBUG, ``Authorization: Bearer <app secret>``
included.  Two guards, because either alone can be undone by a library
update: the third-party protocol loggers stay at INFO whatever ``--debug``
says (their DEBUG output is per frame and per header, useful only inside
those libraries), and every record passes a filter that masks anything shaped
like a credential before it is written.
"""

from __future__ import annotations

import logging
import re
from typing import Final

from appliance.service.admin import APP_SECRET_PREFIX, OPERATOR_KEY_PREFIX, TOKEN_PREFIX

#: Libraries that log protocol traffic (headers, frames) at DEBUG.
PROTOCOL_LOGGERS: Final = ("hpack", "h2", "h11", "wsproto", "websockets")
_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_PREFIXES: Final = "|".join(re.escape(p) for p in (TOKEN_PREFIX, APP_SECRET_PREFIX,
                                                   OPERATOR_KEY_PREFIX))
#: Our credentials (by their prefix) and the value of any Bearer/Basic credential.
_SECRET: Final = re.compile(rf"({_PREFIXES})[A-Za-z0-9_\-]+|(?i:(bearer|basic)(\s+))[^\s'\"]+")
REDACTED: Final = "[redacted]"


def _mask(match: re.Match[str]) -> str:
    if match.group(1):
        return match.group(1) + REDACTED
    return match.group(2) + match.group(3) + REDACTED


def redact(text: str) -> str:
    """`text` with every credential masked."""
    return _SECRET.sub(_mask, text)


class RedactSecrets(logging.Filter):
    """Masks credentials in a record's message and traceback before any handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def configure(*, debug: bool) -> None:
    """Log to stderr at INFO (DEBUG with `debug`), protocol libraries at INFO, secrets masked."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format=_FORMAT)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
    for name in PROTOCOL_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    if debug:
        logging.getLogger(__name__).debug(
            "debug logging on; %s stay at INFO and credentials are masked",
            ", ".join(PROTOCOL_LOGGERS))
