"""Run `tidings serve` as a real child process and learn its port from its one line."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

_LISTENING = re.compile(r"listening on ([0-9.]+):(\d+)")


class ServerProcess:
    """A `tidings serve --port 0` child; `start()` returns once it listens."""

    def __init__(self, data_dir: Path, *extra: str, command: list[str] | None = None,
                 env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = ()) -> None:
        self.data_dir = data_dir
        self.pass_fds = pass_fds
        self.extra = extra
        self.command = command or [sys.executable, "-m", "appliance"]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 30.0, *, port: int = 0) -> None:
        """Start and wait for the listening line; `port` reuses one a previous run got."""
        self.lines = []
        self.proc = subprocess.Popen(
            [*self.command, "--data-dir", str(self.data_dir), "serve", "--port", str(port),
             *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env,
            pass_fds=self.pass_fds)
        assert self.proc.stdout is not None
        # Readiness is the line the server prints once it listens: no sleeps.
        for line in self.proc.stdout:
            self.lines.append(line)
            match = _LISTENING.search(line)
            if match:
                self.host, self.port = match[1], int(match[2])
                # Keep draining stdout so a chatty server never blocks on a full pipe.
                self._reader = threading.Thread(target=self._drain, daemon=True)
                self._reader.start()
                return
        self.proc.wait()
        self.proc.stdout.close()  # else its pipe is only closed by a later test's GC
        raise RuntimeError("server exited before listening:\n" + "".join(self.lines))

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye (crash tests).

        Returns once the server is gone: for the one-file executable that is the
        bootloader's child too, which dies with it (appliance/system/bootloader.py).
        """
        assert self.proc is not None
        children = _pidfds(_children(self.proc.pid))
        try:
            self.proc.kill()
            self.proc.wait()
            for fd in children:  # a pidfd turns readable once its process has exited
                if not select.select([fd], [], [], 30)[0]:
                    raise RuntimeError(f"{self.command[0]}: a child outlived SIGKILL")
        finally:
            for fd in children:
                os.close(fd)
        self._collect()

    def wait(self, timeout: float = 20.0) -> int:
        """Wait for the process to exit by itself; returns the exit code."""
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self._collect()
        return code

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._collect()
        return code

    def _drain(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def _collect(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @classmethod
    def configured(cls, data_dir: Path, toml: str) -> ServerProcess:
        """A server reading `toml` (written beside `data_dir`, passed with `--config`)."""
        config = data_dir.parent / "tidings.toml"
        config.write_text(toml)
        return cls(data_dir, command=[sys.executable, "-m", "appliance", "--config", str(config)])


def _children(pid: int) -> list[int]:
    """The processes `pid` started running its own executable: the one-file
    bootloader's child, the server (not, say, a MariaDB server it started)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        exe = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return []
    found = []
    for child in children:
        with contextlib.suppress(OSError):
            if os.path.samestat(os.stat(f"/proc/{child}/exe"), exe):
                found.append(int(child))
    return found


def _pidfds(pids: list[int]) -> list[int]:
    fds = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # already gone
            fds.append(os.pidfd_open(pid))
    return fds
