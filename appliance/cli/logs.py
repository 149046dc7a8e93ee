"""How the `tidings` command logs: one line per record, text or JSON, and never a secret.

SPEC M13 / issue 12 (finding 8): with ``--debug`` the hpack and h2 loggers
wrote every request header at DEBUG, ``Authorization: Bearer <app secret>``
included.  Two guards, because either alone can be undone by a library
update: the third-party protocol loggers stay at INFO whatever ``--debug``
says (their DEBUG output is per frame and per header, useful only inside
those libraries), and every record passes a filter that masks anything shaped
like a credential before it is written.

Formats (``--log-format``, issue 14): ``text`` (``time LEVEL logger: message``)
or ``json`` (one object per line: ``ts`` RFC 3339 UTC, ``level``, ``logger``,
``msg``, and ``exc`` with the traceback; every field masked again as it is
written).  Under systemd, when stderr is the journal's stream
(``JOURNAL_STREAM``, systemd.exec(5)), each line starts with its syslog
priority (``<3>`` error ... ``<7>`` debug, sd-daemon(3)) so that the journal
records the right level, and text lines leave the time out (the journal
stamps every line).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sys
from typing import Final, TextIO

from appliance.service.admin import APP_SECRET_PREFIX, OPERATOR_KEY_PREFIX, TOKEN_PREFIX

#: Libraries that log protocol traffic (headers, frames) at DEBUG.
PROTOCOL_LOGGERS: Final = ("hpack", "h2", "h11", "wsproto", "websockets")
FORMATS: Final = ("text", "json")
_TEXT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_JOURNAL_TEXT: Final = "%(levelname)s %(name)s: %(message)s"
_PREFIXES: Final = "|".join(re.escape(p) for p in (TOKEN_PREFIX, APP_SECRET_PREFIX,
                                                   OPERATOR_KEY_PREFIX))
#: Our credentials (by their prefix) and the value of any Bearer/Basic credential.
_SECRET: Final = re.compile(rf"({_PREFIXES})[A-Za-z0-9_\-]+|(?i:(bearer|basic)(\s+))[^\s'\"]+")
REDACTED: Final = "[redacted]"
#: sd-daemon(3) priorities by logging level (syslog: 2 crit, 3 err, 4 warning, 6 info, 7 debug).
_PRIORITIES: Final = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
                      (logging.INFO, 6))
#: JOURNAL_STREAM is "<st_dev>:<st_ino>", two decimal numbers; anything longer is not one.
_MAX_JOURNAL_STREAM_CHARS = 64


def _mask(match: re.Match[str]) -> str:
    if match.group(1):
        return match.group(1) + REDACTED
    return match.group(2) + match.group(3) + REDACTED


def redact(text: str) -> str:
    """`text` with every credential masked."""
    return _SECRET.sub(_mask, text)


class RedactSecrets(logging.Filter):
    """Masks credentials in a record's message, traceback and stack before any handler
    writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def priority(level: int) -> int:
    """The syslog priority of a logging level (sd-daemon(3))."""
    return next((p for floor, p in _PRIORITIES if level >= floor), 7)


def _utc(created: float) -> str:
    """RFC 3339 UTC with milliseconds: 2026-05-01T12:00:00.123Z."""
    stamp = dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class JsonLines(logging.Formatter):
    """One JSON object per record; `RedactSecrets` ran before, every field is masked again."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": _utc(record.created), "level": record.levelname.lower(),
               "logger": record.name, "msg": record.getMessage()}
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        # json.dumps escapes newlines: a traceback stays on its record's one line.
        return json.dumps({k: redact(v) for k, v in doc.items()}, ensure_ascii=False)


class JournalPriority(logging.Formatter):
    """Another formatter's lines, each prefixed with the record's ``<N>`` priority."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        # Each line is a journal entry of its own: a traceback's lines keep the level too.
        return "\n".join(prefix + line for line in self._inner.format(record).split("\n"))


def on_journal(stream: TextIO) -> bool:
    """Whether `stream` is the journal's stream socket (JOURNAL_STREAM, systemd.exec(5))."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if (not sep or len(value) > _MAX_JOURNAL_STREAM_CHARS or not dev.isdecimal()
            or not ino.isdecimal()):
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # closed, or not a file (captured)
        return False
    return (stat.st_dev, stat.st_ino) == (int(dev), int(ino))


def formatter(log_format: str, *, journal: bool) -> logging.Formatter:
    """The formatter for `log_format` ("text" or "json"), for the journal or not."""
    if log_format == "json":
        inner: logging.Formatter = JsonLines()
    else:
        inner = logging.Formatter(_JOURNAL_TEXT if journal else _TEXT)
    return JournalPriority(inner) if journal else inner


def configure(*, debug: bool, log_format: str = "text") -> None:
    """Log to stderr at INFO (DEBUG with `debug`) as `log_format`, protocol libraries at
    INFO, secrets masked; ``<N>`` priorities when stderr is the journal."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format, journal=on_journal(sys.stderr)))
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[handler])
    for existing in logging.getLogger().handlers:
        if not any(isinstance(f, RedactSecrets) for f in existing.filters):
            existing.addFilter(RedactSecrets())
    for name in PROTOCOL_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    if debug:
        logging.getLogger(__name__).debug(
            "debug logging on; %s stay at INFO and credentials are masked",
            ", ".join(PROTOCOL_LOGGERS))
