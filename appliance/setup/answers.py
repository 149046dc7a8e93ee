"""The wizard's questions and the one precedence rule for their answers.

Every answer has a flag and an answers-file key (the flag without ``--``, dashes
as underscores), so that the wizard runs unattended.  Layers are merged field
by field: flag > answers file > existing configuration > default
(packaging.md §2.1).  This module only types the raw values (a port is a
number); `appliance.setup.checks` judges them.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import tomlkit

from appliance.errors import AnswerError

TLS_MODES: Final = ("acme", "files", "self-signed")
#: The ``http_port`` answer that means "no plain-HTTP port" (``server.redirect_port = -1``).
NO_PORT: Final = "none"
#: An answers file is a handful of lines; anything bigger is not one.
MAX_ANSWERS_FILE_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Question:
    """One question: its answers-file key (= `Answers` field), its flag, its prompt."""

    key: str
    flag: str
    prompt: str


HOSTNAME = Question("hostname", "--hostname",
                    "Public hostname (the DNS name clients connect to)")
TLS = Question("tls", "--tls", "TLS certificate: acme (obtained and renewed automatically),"
                               " files (your own certificate), self-signed")
ACME_EMAIL = Question("acme_email", "--acme-email",
                      "E-mail address for the certificate authority (expiry notices)")
CERT = Question("cert", "--cert", "Certificate file (PEM, the chain after the certificate)")
KEY = Question("key", "--key", "Private key file (PEM, not passphrase-protected)")
PORT = Question("port", "--port", "Main port (TLS: native protocol, WebSocket, REST API)")
HTTP_PORT = Question("http_port", "--http-port",
                     f"HTTP port (redirects to HTTPS, ACME HTTP-01; {NO_PORT!r} for none)")
DATABASE = Question("database", "--database",
                    "Database: sqlite (embedded), mariadb (this machine's MariaDB server),"
                    " private (a MariaDB server of its own), or a mariadb:// URL")
APP = Question("app", "--app", "Name of the first app")
#: Asked in this order; later checks rely on earlier answers (a certificate
#: must cover the hostname).
QUESTIONS: Final = (HOSTNAME, TLS, ACME_EMAIL, CERT, KEY, PORT, HTTP_PORT, DATABASE, APP)
#: Answers that are never prompted for (flags and answers-file keys only).
LISTEN_ADDRESS = Question("listen_address", "--listen-address",
                          "Address to listen on ('' = every address, IPv4 and IPv6)")
HOSTNAME_NOT_LOCAL_OK = Question("hostname_not_local_ok", "--hostname-not-local-ok",
                                 "Use the hostname even though it does not resolve to an"
                                 " address of this machine (behind NAT)")
ALL_QUESTIONS: Final = (*QUESTIONS, LISTEN_ADDRESS, HOSTNAME_NOT_LOCAL_OK)
BY_KEY: Final = {q.key: q for q in ALL_QUESTIONS}


@dataclass(frozen=True, slots=True)
class Answers:
    """One layer of answers; None = this layer does not say."""

    hostname: str | None = None
    tls: str | None = None
    acme_email: str | None = None
    cert: str | None = None
    key: str | None = None
    port: int | None = None
    #: -1: none (`NO_PORT`).
    http_port: int | None = None
    database: str | None = None
    app: str | None = None
    listen_address: str | None = None
    hostname_not_local_ok: bool | None = None

    def get(self, question: Question) -> Any:
        return getattr(self, question.key)

    def with_answer(self, question: Question, value: Any) -> Answers:
        return dataclasses.replace(self, **{question.key: value})


#: What a fresh install gets for what nobody answered.
DEFAULTS: Final = Answers(tls="acme", port=443, http_port=80, database="sqlite",
                          listen_address="")


def merged(*layers: Answers) -> Answers:
    """Field by field, the first layer that says wins (give them flag layer first)."""
    values = {}
    for f in dataclasses.fields(Answers):
        values[f.name] = next((getattr(layer, f.name) for layer in layers
                               if getattr(layer, f.name) is not None), None)
    return Answers(**values)


def applicable(answers: Answers) -> tuple[Question, ...]:
    """The questions that matter for these answers (an e-mail only for ACME...)."""
    skip = set()
    if answers.tls != "acme":
        skip.add(ACME_EMAIL.key)
    if answers.tls != "files":
        skip.update((CERT.key, KEY.key))
    return tuple(q for q in QUESTIONS if q.key not in skip)


def missing(answers: Answers) -> tuple[Question, ...]:
    """Applicable questions still without an answer."""
    return tuple(q for q in applicable(answers) if answers.get(q) is None)


def typed(question: Question, raw: Any, source: str) -> Any:
    """`raw` (a flag's text, a TOML value) as the type of `question`'s answer.

    Raises:
        AnswerError: the wrong type (names the question and `source`).
    """
    if question in (PORT, HTTP_PORT):
        return _port(question, raw, source)
    if question is HOSTNAME_NOT_LOCAL_OK:
        if not isinstance(raw, bool):
            raise AnswerError(f"must be true or false in {source}", question=question.key)
        return raw
    if not isinstance(raw, str):
        raise AnswerError(f"must be a string in {source}, got {raw!r}", question=question.key,
                          fix=f"quote it, or give {question.flag}")
    return raw.strip()


def _port(question: Question, raw: Any, source: str) -> int:
    fix = f"give {question.flag} 1-65535" + (f" or {NO_PORT}" if question is HTTP_PORT else "")
    if question is HTTP_PORT and isinstance(raw, str) and raw.strip().lower() == NO_PORT:
        return -1
    if isinstance(raw, str) and raw.strip().isdigit() and len(raw.strip()) <= 5:
        raw = int(raw.strip())
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 65535:
        raise AnswerError(f"{raw!r} in {source} is not a port number", question=question.key,
                          fix=fix)
    return raw


def from_flags(flags: Mapping[str, Any]) -> Answers:
    """The flag layer: ``{"acme_email": "...", "port": "443", ...}``, None for absent.

    Raises:
        AnswerError: a flag's value of the wrong type.
    """
    values = {key: typed(BY_KEY[key], raw, f"{BY_KEY[key].flag}")
              for key, raw in flags.items() if raw is not None}
    return Answers(**values)


def from_file(path: Path) -> Answers:
    """The answers-file layer (TOML; keys as in `print_answers`).

    Raises:
        AnswerError: unreadable, too big, not TOML, an unknown key, a wrong type.
    """
    source = f"answers file {path}"
    try:
        with path.open("rb") as f:
            data = f.read(MAX_ANSWERS_FILE_BYTES + 1)
    except OSError as exc:
        raise AnswerError(f"cannot read {path}: {exc.strerror}", question="answers",
                          fix="give --answers a readable TOML file") from None
    if len(data) > MAX_ANSWERS_FILE_BYTES:
        raise AnswerError(f"{path} is larger than {MAX_ANSWERS_FILE_BYTES} bytes",
                          question="answers")
    try:
        tree = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AnswerError(f"{path} is not TOML: {exc}", question="answers") from None
    values = {}
    for key, raw in tree.items():
        question = BY_KEY.get(key)
        if question is None:
            raise AnswerError(f"unknown key in {source}", question=key,
                              fix="known keys: " + ", ".join(BY_KEY))
        values[key] = typed(question, raw, source)
    return Answers(**values)


def _redacted(database: str) -> str:
    """A mariadb:// URL without its password: an answers file is shared, pasted, kept."""
    parts = urlsplit(database)
    if parts.scheme != "mariadb" or parts.password is None:
        return database
    netloc = parts.netloc.replace(":" + parts.password + "@", ":REDACTED@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def print_answers(answers: Answers) -> str:
    """An answers file that gives `answers` again (``tidings setup --answers FILE --yes``).

    Questions without an answer are left as comments naming the question.
    """
    doc = tomlkit.document()
    doc.add(tomlkit.comment("tidings setup answers: tidings setup --answers FILE --yes"))
    for question in ALL_QUESTIONS:
        value = answers.get(question)
        if question is HTTP_PORT and value == -1:
            value = NO_PORT
        if question is DATABASE and isinstance(value, str):
            value = _redacted(value)
        if value is None:
            doc.add(tomlkit.comment(f"{question.key} = ...  # {question.prompt}"))
            continue
        item = tomlkit.item(value)
        item.comment(question.prompt)
        doc.add(question.key, item)
    return tomlkit.dumps(doc)
