"""Each answer judged before anything is written; a refusal names the question and the fix.

`check` takes one question at a time, in `QUESTIONS` order, with the earlier
answers already settled (a certificate must cover the hostname, ACME needs
port 80 or 443).  It returns the answers with that one normalised, and
notes for the summary.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from appliance.errors import AnswerError, UsageError
from appliance.service.admin import check_app_name
from appliance.setup import certificate, dbchoice, hostname, ports
from appliance.setup.answers import (
    ACME_EMAIL,
    APP,
    CERT,
    DATABASE,
    HOSTNAME,
    HOSTNAME_NOT_LOCAL_OK,
    HTTP_PORT,
    KEY,
    PORT,
    TLS,
    TLS_MODES,
    Answers,
    Question,
)

#: An e-mail address as the CA takes it: one '@', a dotted domain, no spaces
#: (RFC 5321 §4.5.3.1.3 bounds the whole at 254 octets).
_EMAIL: Final = re.compile(r"^[^@\s<>,;:\"]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+$")
MAX_EMAIL_BYTES: Final = 254
#: The ports ACME validates on: HTTP-01 (RFC 8555 §8.3) and TLS-ALPN-01 (RFC 8737 §3).
ACME_HTTP_PORT: Final = 80
ACME_TLS_PORT: Final = 443


@dataclass(slots=True)
class CheckContext:
    """What the checks need besides the answers."""

    data_dir: Path
    now: dt.datetime
    #: Interactive: asks the operator to confirm (hostname not local); None: unattended.
    confirm: Callable[[str], bool] | None = None
    #: The user the service runs as (its files must be readable by it), None: whoever runs.
    service_user: str | None = None
    #: Lines for the summary, by question key.
    notes: dict[str, str] = field(default_factory=dict)
    database: dbchoice.DatabaseChoice | None = None
    #: The hostname of the existing configuration: accepted before, not asked about again.
    configured_hostname: str | None = None
    cert_pin: str = ""


def check(question: Question, answers: Answers, ctx: CheckContext) -> Answers:
    """Check `question`'s answer; return `answers` with it normalised.

    Raises:
        AnswerError: naming the question.
    """
    value = answers.get(question)
    if question is HOSTNAME:
        return _hostname(answers, ctx)
    if question is TLS:
        return _tls(answers, str(value))
    if question is ACME_EMAIL:
        return answers.with_answer(question, check_email(str(value)))
    if question is CERT:
        path = certificate.absolute(str(value))
        facts = certificate.check_certificate(path, answers.hostname or "", ctx.now)
        if ctx.service_user:
            certificate.check_service_can_read(CERT, path, ctx.service_user)
        ctx.cert_pin = facts.pin
        ctx.notes[CERT.key] = f"for {', '.join(facts.names[:3])}, valid until" \
                              f" {facts.not_after:%Y-%m-%d}"
        return answers.with_answer(question, path)
    if question is KEY:
        path = certificate.absolute(str(value))
        certificate.check_key(answers.cert or "", path)
        if ctx.service_user:
            certificate.check_service_can_read(KEY, path, ctx.service_user)
        return answers.with_answer(question, path)
    if question is PORT:
        listen = ports.check_listen_address(answers.listen_address or "")
        _note(ctx, PORT, ports.check_bindable(PORT, listen, _int(value)))
        return dataclasses.replace(answers, listen_address=listen)
    if question is HTTP_PORT:
        return _http_port(answers, ctx)
    if question is DATABASE:
        choice = dbchoice.parse_choice(str(value), ctx.data_dir)
        dbchoice.check_usable(choice, ctx.data_dir)
        ctx.database = choice
        return answers.with_answer(question, choice.answer)
    if question is APP:
        try:
            return answers.with_answer(question, check_app_name(str(value)))
        except UsageError as exc:
            raise AnswerError(str(exc), question=APP.key, fix=f"give {APP.flag} NAME") from None
    raise AssertionError(f"no check for {question.key}")


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


def _note(ctx: CheckContext, question: Question, note: str | None) -> None:
    if note:
        ctx.notes[question.key] = note


def _hostname(answers: Answers, ctx: CheckContext) -> Answers:
    name = hostname.check_syntax(answers.hostname or "")
    answers = answers.with_answer(HOSTNAME, name)
    problem = hostname.resolve(name).problem(name)
    if problem is None:
        return answers
    if answers.hostname_not_local_ok or name == ctx.configured_hostname:
        ctx.notes[HOSTNAME.key] = f"{problem}: confirmed"
        return answers
    if ctx.confirm is not None and ctx.confirm(f"{problem}. Use {name} anyway?"):
        ctx.notes[HOSTNAME.key] = f"{problem}: confirmed"
        return answers.with_answer(HOSTNAME_NOT_LOCAL_OK, True)
    raise AnswerError(problem, question=HOSTNAME.key,
                      fix=f"point its DNS A/AAAA record at this machine, or confirm with"
                          f" {HOSTNAME_NOT_LOCAL_OK.flag}")


def _tls(answers: Answers, value: str) -> Answers:
    mode = value.strip().lower()
    if mode not in TLS_MODES:
        raise AnswerError(f"{value!r} is not a TLS mode", question=TLS.key,
                          fix=f"give {TLS.flag} one of {', '.join(TLS_MODES)}")
    name = answers.hostname or ""
    if mode == "acme" and hostname.special_use(name):
        raise AnswerError(f"no public certificate authority issues for {name} (a special-use"
                          " name)", question=TLS.key,
                          fix=f"use a public DNS name, or {TLS.flag} self-signed or files")
    return answers.with_answer(TLS, mode)


def check_email(raw: str) -> str:
    """An ACME contact address.

    Raises:
        AnswerError: naming ``acme_email``.
    """
    text = raw.strip()
    if len(text.encode()) > MAX_EMAIL_BYTES or not _EMAIL.match(text):
        raise AnswerError(f"{raw!r} is not an e-mail address", question=ACME_EMAIL.key,
                          fix=f"give {ACME_EMAIL.flag} you@example.com (the CA writes to it"
                              " about expiring certificates)")
    return text


def _http_port(answers: Answers, ctx: CheckContext) -> Answers:
    port, main = answers.http_port, answers.port
    if port == main:
        raise AnswerError(f"port {port} is already the main port", question=HTTP_PORT.key,
                          fix=f"give {HTTP_PORT.flag} another port, or none")
    if answers.tls == "acme" and main != ACME_TLS_PORT and port != ACME_HTTP_PORT:
        raise AnswerError(f"the certificate authority validates on port {ACME_HTTP_PORT}"
                          f" (HTTP-01) or {ACME_TLS_PORT} (TLS-ALPN-01); neither is served",
                          question=HTTP_PORT.key,
                          fix=f"give {HTTP_PORT.flag} {ACME_HTTP_PORT} or {PORT.flag}"
                              f" {ACME_TLS_PORT}, or --tls self-signed or files")
    if port is not None and port > 0:
        _note(ctx, HTTP_PORT, ports.check_bindable(HTTP_PORT, answers.listen_address or "", port))
    return answers
