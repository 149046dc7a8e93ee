"""`tidings status` for people: one headline, then one aligned line per subject."""

from __future__ import annotations

from appliance.status.report import Certificate, StatusReport, iso
from appliance.status.view import StatusView, Verdict


def duration(seconds: float) -> str:
    """``3 d 4 h``, ``2 h 5 min``, ``42 s``: the two largest units."""
    seconds = max(0, int(seconds))
    units = (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1))
    parts: list[str] = []
    for name, size in units:
        if seconds >= size or (name == "s" and not parts):
            parts.append(f"{seconds // size} {name}")
            seconds %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def certificate_line(cert: Certificate, now_ms: int) -> str:
    """``acme, expires 2026-03-01T00:00:00+00:00 (57 days left); renewal automatic``."""
    days = cert.days_left(now_ms)
    if days is None:
        expiry = "expiry unknown"
    elif days < 0:
        expiry = f"EXPIRED at {iso(cert.not_after_ms)}"
    else:
        expiry = f"expires {iso(cert.not_after_ms)} ({days:.0f} days left)"
    renewal = f"renewal {cert.renewal}"
    if cert.renewal == "failing":
        renewal += f" ({cert.failed_attempts} attempts; last error: {cert.last_error or '-'})"
    return f"{cert.serving}, {expiry}; {renewal}"


def lines(view: StatusView, now_ms: int) -> list[str]:
    """The report as text, headline first."""
    report = view.report
    version = f"tidings {report.version}" if report is not None else "tidings"
    head = f"{version}: {view.verdict.value}"
    running = report is not None and view.verdict is not Verdict.NOT_RUNNING
    if report is not None and running:
        age = max(0.0, (now_ms - report.updated_ms) / 1000)
        head += f" (pid {report.pid}, up {duration(report.uptime_s + age)})"
    out = [head, _row("why", view.reason)]
    if view.health is not None:
        health = view.health
        answer = (f"{health.status} ok in {health.elapsed_ms:g} ms" if health.ok
                  else health.error)
        out.append(_row("health", f"{health.url}: {answer}"))
    if view.unit is not None:
        out.append(_row("systemd", f"{view.unit.unit}: {view.unit.active} ({view.unit.sub})"))
    if report is not None and running:
        out += _report_rows(report, now_ms)
    elif report is not None:
        out.append(_row("last report", f"{iso(report.updated_ms)} by pid {report.pid}"
                        f" (tidings {report.version})"))
    out.append(_row("status file", str(view.status_file)))
    return out


def _report_rows(report: StatusReport, now_ms: int) -> list[str]:
    listeners = ", ".join(
        f"{x.host}:{x.port} ({x.role}{', from systemd' if x.activated else ''})"
        for x in report.listeners) or "none"
    protocols = ", ".join(f"{k} {v}" for k, v in sorted(report.by_protocol.items()) if v)
    rows = [_row("listeners", listeners),
            _row("connections", f"{report.connections} open"
                 + (f": {protocols}" if protocols else "")),
            _row("queue", f"{report.commit_queue} messages waiting for commit"
                 + ("; the store is failing" if report.store_failing else "")),
            _row("store", report.store_location or report.store_backend)]
    if report.certificate is not None:
        rows.append(_row("certificate", certificate_line(report.certificate, now_ms)))
    age = max(0.0, (now_ms - report.updated_ms) / 1000)
    rows.append(_row("reported", f"{duration(age)} ago at {iso(report.updated_ms)}"
                     f" (every {report.interval_s:g} s)"))
    return rows


def _row(label: str, text: str) -> str:
    return f"  {label:<12} {text}"
