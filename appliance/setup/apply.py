"""What the wizard does once the answers are checked (and, interactive, confirmed).

In order, each step only after the one before succeeded: the database
(bootstrap for MariaDB; nothing of the configuration is written if it fails),
the configuration file, the self-signed certificate (so its key can be pinned),
the first app, the data directory handed to the service's user, then under
systemd the socket's ports, the start and readiness, the health check and the
first message.  The same `probe` functions run against a server the tests
start, so the systemd path differs only by the systemctl calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from appliance.certs.selfsigned import ensure_self_signed
from appliance.config import load_config
from appliance.config.model import StorageConfig
from appliance.engine.clock import SystemClock
from appliance.setup import configfile, dbchoice, firstapp, probe, service
from appliance.setup.answers import Answers
from appliance.setup.certificate import pin_of
from appliance.system import layout
from appliance.system.systemd import systemd_running

#: Where the server keeps its self-signed certificate (`appliance.transport.tls`).
SELF_SIGNED_DIR = "tls"


@dataclass(frozen=True, slots=True)
class Plan:
    """Checked answers and where they go."""

    config_path: Path
    existing: configfile.ExistingConfig
    data_dir: Path
    answers: Answers
    database: dbchoice.DatabaseChoice
    #: The operator's certificate's pin (``files``), "" otherwise.
    cert_pin: str
    start: bool


def apply(plan: Plan, out: Callable[[str], None]) -> None:
    """Carry the plan out, telling the operator each step.

    Raises:
        LifecycleError, StorageError, DbServerError: the step that failed (the steps
            before it stay done; running setup again picks up from there).
    """
    answers = plan.answers
    assert answers.app is not None
    assert answers.hostname is not None
    assert answers.port is not None
    assert answers.http_port is not None
    for line in dbchoice.prepare(plan.database, plan.data_dir, StorageConfig().timeout_s,
                                 SystemClock().wall_ms()):
        out(line)
    new_text = configfile.updated(plan.existing, answers, plan.data_dir, plan.database.setting)
    config_changed = new_text != plan.existing.text
    if config_changed:
        configfile.write_atomically(plan.config_path, new_text,
                                    configfile.owner_for(plan.config_path))
        out(f"wrote {plan.config_path}: "
            + ", ".join(configfile.changed_keys(plan.existing, new_text)))
    else:
        out(f"{plan.config_path} unchanged")
    config = load_config(plan.config_path, {"storage.data_dir": plan.data_dir})
    pin = plan.cert_pin
    if answers.tls == "self-signed":
        pin = _self_signed_pin(plan.data_dir)
    first = firstapp.ensure_first_app(config, answers.app)
    service.give_to_service(plan.data_dir)
    _show_app(first, out)
    ports_changed = False
    if systemd_running() and plan.config_path == layout.CONFIG_FILE:
        ports_changed = service.write_dropins(service.socket_dropins(
            answers.listen_address or "", answers.port, answers.http_port))
    target = probe.Target(probe.local_address(answers.listen_address or ""), answers.port,
                          answers.hostname, pin if answers.tls != "acme" else "",
                          self_signed=answers.tls == "self-signed")
    if not plan.start:
        out("--no-start: the service was not enabled or started, nor the first message sent."
            "\nStart it with: systemctl enable --now tidings.socket tidings.service"
            "\n(or `tidings serve`), then send a first message with:")
        out(_command(target, first))
        return
    started = service.start(service.StartPlan(config_changed, ports_changed,
                                              plan.database.answer == dbchoice.PRIVATE))
    out(f"service {started}")
    probe.health(target)
    out(f"health: {target.url(probe.HEALTH_PATH)} answers 200")
    if first.secret is None:
        out(f"Send a message as app {first.name!r} with its secret in ${probe.SECRET_VARIABLE}:")
        out(_command(target, first))
        return
    sent = probe.send_first_message(target, first.secret, first.recipient)
    out(f"first message: sent to {first.recipient!r}, id {sent.get('id')}, status"
        f" {sent.get('status')}. The same request, for your backend"
        f" ({probe.SECRET_VARIABLE} set to the secret above):")
    out(_command(target, first))


def _self_signed_pin(data_dir: Path) -> str:
    """The self-signed certificate the server will serve, made now so its key can be pinned."""
    cert_path, _ = ensure_self_signed(data_dir / SELF_SIGNED_DIR)
    return pin_of(x509.load_pem_x509_certificate(cert_path.read_bytes()))


def _show_app(first: firstapp.FirstApp, out: Callable[[str], None]) -> None:
    if first.secret is None:
        out(f"app {first.name!r} exists: left as it is, its secrets unchanged"
            f" (`tidings app secret {first.name}` issues a new one and revokes the old)")
        return
    out(f"app {first.name!r} created. Its secret, shown this once (keep it now;"
        f" `tidings app secret {first.name}` issues a new one):")
    out(f"    {first.secret}")


def _command(target: probe.Target, first: firstapp.FirstApp) -> str:
    return "  " + probe.curl_command(target, first.recipient).replace("\n", "\n  ")
