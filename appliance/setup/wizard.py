"""The wizard's flow: answers, checks, summary, then `appliance.setup.apply`.

Interactive (a terminal, no ``--yes``): every question not answered by a flag
or the answers file is asked, the current value (existing configuration, else
the default) offered for Enter; a refused answer is explained and asked
again; the summary ends with "Does this look right?" (Discourse), and "n"
asks everything again.  Unattended: what is missing, and every refused
answer, is listed in one error; nothing is written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.config import default_data_dir, load_config
from appliance.errors import AnswerError, AnswersRefusedError, ApplianceError, LifecycleError
from appliance.setup import apply, checks, configfile, dbchoice, firstapp
from appliance.setup.answers import (
    APP,
    DEFAULTS,
    HTTP_PORT,
    NO_PORT,
    QUESTIONS,
    Answers,
    Question,
    applicable,
    from_file,
    merged,
    missing,
    print_answers,
    typed,
)
from appliance.setup.terminal import Terminal
from appliance.system import layout
from appliance.system.systemd import systemd_running

Output = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Options:
    """What the command line says."""

    config_path: Path
    #: The global ``--data-dir`` (None: the existing configuration's, else the default).
    data_dir: Path | None
    flags: Answers
    answers_file: Path | None = None
    unattended: bool = False
    print_answers: bool = False
    start: bool = True


def run(options: Options, out: Output,
        open_terminal: Callable[[], Terminal | None] = Terminal.open) -> None:
    """The whole wizard.

    Raises:
        AnswerError, AnswersRefusedError: refused or missing answers (nothing written).
        LifecycleError: a step after the checks failed (it names the step).
    """
    existing = configfile.read(options.config_path)
    data_dir = (options.data_dir or configfile.existing_data_dir(existing)
                or default_data_dir()).absolute()
    fixed = merged(options.flags,
                   from_file(options.answers_file) if options.answers_file else Answers())
    current = _existing_layer(existing, data_dir)
    below = merged(current, DEFAULTS)
    if options.print_answers:
        out(print_answers(merged(fixed, below)))
        return
    if options.start:
        _check_can_start(options.config_path, data_dir)
    ctx = checks.CheckContext(data_dir, dt.datetime.now(dt.UTC),
                              service_user=dbchoice.service_user(),
                              configured_hostname=current.hostname)
    terminal = None if options.unattended else open_terminal()
    try:
        if terminal is None:
            answers = _unattended(merged(fixed, below), ctx)
            out(_summary(answers, ctx, existing, data_dir))
        else:
            ctx.confirm = lambda text: terminal.confirm(text, False)
            answers = _interactive(terminal, fixed, merged(fixed, below), ctx, existing,
                                   data_dir)
        assert ctx.database is not None
        apply.apply(apply.Plan(options.config_path, existing, data_dir, answers, ctx.database,
                               ctx.cert_pin, options.start), out)
    finally:
        if terminal is not None:
            terminal.close()


def _existing_layer(existing: configfile.ExistingConfig, data_dir: Path) -> Answers:
    layer = configfile.existing_answers(existing, data_dir)
    if not existing.exists:
        return layer
    try:
        config = load_config(existing.path, {"storage.data_dir": data_dir})
    except ApplianceError:
        return layer  # a file that does not load: setup is how it gets fixed
    return layer.with_answer(APP, firstapp.existing_first_app(config))


def _check_can_start(config_path: Path, data_dir: Path) -> None:
    fix = "or give --no-start and start `tidings serve` yourself"
    if not systemd_running():
        raise LifecycleError("this host does not run systemd", step="starting the service",
                             fix=f"give --no-start and start `tidings --config {config_path}"
                                 " serve` yourself")
    if config_path != layout.CONFIG_FILE:
        raise LifecycleError(f"the service reads {layout.CONFIG_FILE}, not {config_path}",
                             step="starting the service", fix=f"drop --config, {fix}")
    if data_dir != layout.DATA_DIR:
        raise LifecycleError(f"the service keeps its data in {layout.DATA_DIR}, not"
                             f" {data_dir}", step="starting the service",
                             fix=f"drop --data-dir, {fix}")


def _unattended(answers: Answers, ctx: checks.CheckContext) -> Answers:
    absent = missing(answers)
    if absent:
        raise AnswersRefusedError(tuple(
            AnswerError("no answer", question=q.key,
                        fix=f"give {q.flag}, or {q.key} in --answers FILE") for q in absent))
    refusals = []
    for question in applicable(answers):
        try:
            answers = checks.check(question, answers, ctx)
        except AnswerError as exc:
            refusals.append(exc)
    if len(refusals) == 1:
        raise refusals[0]
    if refusals:
        raise AnswersRefusedError(tuple(refusals))
    return answers


def _interactive(terminal: Terminal, fixed: Answers, answers: Answers,
                 ctx: checks.CheckContext, existing: configfile.ExistingConfig,
                 data_dir: Path) -> Answers:
    terminal.say("Tidings setup: Enter keeps the value in [brackets].")
    while True:
        for question in QUESTIONS:
            if question in applicable(answers):
                answers = _settle(terminal, question, answers,
                                  given=fixed.get(question) is not None, ctx=ctx)
        terminal.say()
        terminal.say(_summary(answers, ctx, existing, data_dir))
        if terminal.confirm("Does this look right?", True):
            return answers
        fixed = Answers()  # this time every question is asked


def _settle(terminal: Terminal, question: Question, answers: Answers, *, given: bool,
            ctx: checks.CheckContext) -> Answers:
    """Ask (unless a flag or the answers file gave it) until the answer passes its check."""
    while True:
        if not given:
            raw = terminal.ask(question.prompt, _shown(question, answers.get(question)))
            try:
                answers = answers.with_answer(question, typed(question, raw, "the answer"))
            except AnswerError as exc:
                terminal.say(f"  {exc}")
                continue
        try:
            return checks.check(question, answers, ctx)
        except AnswerError as exc:
            terminal.say(f"  {exc}")
            given = False


def _shown(question: Question, value: object) -> str | None:
    if value is None:
        return None
    if question is HTTP_PORT and value == -1:
        return NO_PORT
    return str(value)


def _summary(answers: Answers, ctx: checks.CheckContext,
             existing: configfile.ExistingConfig, data_dir: Path) -> str:
    assert ctx.database is not None
    listen = answers.listen_address or "every address"
    http = "none" if answers.http_port == -1 else str(answers.http_port)
    tls = {"acme": f"from ACME (Let's Encrypt), contact {answers.acme_email}",
           "files": f"{answers.cert} with {answers.key}",
           "self-signed": "self-signed (clients pin or trust it explicitly)"}[answers.tls or ""]
    rows = [("hostname", answers.hostname), ("TLS", tls),
            ("listen", f"{listen}, port {answers.port}; HTTP port {http}"),
            ("database", ctx.database.describe()), ("first app", answers.app),
            ("data", str(data_dir))]
    lines = ["Setup will use:"]
    for label, value in rows:
        lines.append(f"  {label:<10} {value}")
    lines += [f"  note       {note}" for note in ctx.notes.values()]
    new_text = configfile.updated(existing, answers, data_dir, ctx.database.setting)
    keys = configfile.changed_keys(existing, new_text)
    what = ", ".join(keys) if keys else "nothing changes"
    lines.append(f"  writes     {existing.path} ({what})")
    return "\n".join(lines)
