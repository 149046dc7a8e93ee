"""Questions on the operator's terminal, even when stdin is a pipe (``curl ... | sh``).

packaging.md §0: the wizard reads /dev/tty, not stdin.  No controlling
terminal at all (cron, CI, a container without a tty): there is nobody to ask,
and what is still missing is an error listing the flags.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Final, TextIO

from appliance.errors import LifecycleError

TTY: Final = "/dev/tty"
#: The longest answer read (a path, a URL); the rest of a longer line is discarded.
MAX_ANSWER_CHARS: Final = 4096


class Terminal:
    """Prompts and answers on one terminal."""

    def __init__(self, reader: TextIO, writer: TextIO, *, owned: bool = False) -> None:
        self.reader = reader
        self.writer = writer
        self._owned = owned

    @classmethod
    def open(cls) -> Terminal | None:
        """The controlling terminal; stdin/stdout when that cannot be opened but stdin is
        one; None when there is no terminal."""
        try:
            reader = open(TTY, encoding="utf-8", errors="replace")  # noqa: SIM115 (kept open)
        except OSError:
            if sys.stdin.isatty():
                return cls(sys.stdin, sys.stdout)
            return None
        try:
            writer = open(TTY, "w", encoding="utf-8")  # noqa: SIM115 (kept open)
        except OSError:
            reader.close()
            return None
        return cls(reader, writer, owned=True)

    def close(self) -> None:
        if self._owned:
            for stream in (self.reader, self.writer):
                with contextlib.suppress(OSError):
                    stream.close()

    def say(self, text: str = "") -> None:
        self.writer.write(text + "\n")
        self.writer.flush()

    def ask(self, prompt: str, default: str | None) -> str:
        """One answer; Enter keeps `default` (None: an answer is needed).

        Raises:
            LifecycleError: the terminal closed (end of input).
        """
        while True:
            shown = f" [{default}]" if default is not None else ""
            self.writer.write(f"{prompt}{shown}: ")
            self.writer.flush()
            line = self._line()
            if line is None:
                self.say(f"  the answer is longer than {MAX_ANSWER_CHARS} characters")
                continue
            text = line.strip()
            if text:
                return text
            if default is not None:
                return default
            self.say("  an answer is needed")

    def confirm(self, prompt: str, default: bool) -> bool:
        """Yes or no; Enter keeps `default`."""
        while True:
            self.writer.write(f"{prompt} [{'Y/n' if default else 'y/N'}]: ")
            self.writer.flush()
            line = self._line()
            text = (line or "").strip().lower()
            if not text and line is not None:
                return default
            if text in ("y", "yes"):
                return True
            if text in ("n", "no"):
                return False
            self.say("  answer y or n")

    def _line(self) -> str | None:
        """A line without its end; None when it was too long (the rest is discarded)."""
        line = self.reader.readline(MAX_ANSWER_CHARS + 1)
        if line == "":
            raise LifecycleError("the terminal closed before every question was answered",
                                 step="setup", fix="answer with flags and --yes instead")
        if len(line) > MAX_ANSWER_CHARS and not line.endswith("\n"):
            while True:
                rest = self.reader.readline(MAX_ANSWER_CHARS)
                if rest == "" or rest.endswith("\n"):
                    return None
        return line.rstrip("\n")
