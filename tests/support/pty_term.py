"""Running a command under a real pseudo-terminal and reading what a person would see.

The child gets a pty of a given size as stdin, stdout and stderr; everything it writes is fed to
`pyte`, a VT100 emulator, so a test can read the screen and the scrollback (the lines that
scrolled off the top) exactly as a terminal keeps them.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from typing import Callable, Sequence

import pyte


class PtySession:
    """One child process on a pty of ``rows`` x ``cols``."""

    def __init__(self, argv: Sequence[str], *, rows: int = 15, cols: int = 80, env: dict[str, str] | None = None,
                 cwd: str | None = None) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = dict(os.environ if env is None else env)
        env.update(TERM="xterm-256color", COLUMNS=str(cols), LINES=str(rows))
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen(list(argv), stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                     start_new_session=True, preexec_fn=_default_signals)
        os.close(slave)
        self.screen = pyte.HistoryScreen(cols, rows, history=100_000)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not data:
            return False
        self.raw.extend(data)
        self.stream.feed(data)
        return True

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 120) -> None:
        """Read output until ``predicate()`` holds; AssertionError with the screen after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("timed out; screen:\n" + "\n".join(self.lines()))
            if not self._read(0.2) and not predicate():
                raise AssertionError("the program ended; screen:\n" + "\n".join(self.lines()))

    def wait_for_text(self, text: str, timeout: float = 120) -> None:
        self.wait_for(lambda: text in self.raw.decode("utf-8", "replace"), timeout)

    def send(self, data: str | bytes) -> None:
        os.write(self.master, data.encode() if isinstance(data, str) else data)

    def finish(self, timeout: float = 120) -> int:
        """Read until the child exits and closes the terminal; its return code."""
        deadline = time.monotonic() + timeout
        while self._read(0.2):
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("the program did not end; screen:\n" + "\n".join(self.lines()))
        code = self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        os.close(self.master)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def lines(self) -> list[str]:
        """Scrollback then screen, one string per row, trailing blanks removed (blank rows at the end too)."""
        rows = [_row_text(row, self.screen.columns) for row in self.screen.history.top]
        rows += [line.rstrip() for line in self.screen.display]
        while rows and not rows[-1]:
            rows.pop()
        return rows


def _row_text(row, columns: int) -> str:
    return "".join(row[x].data for x in range(columns)).rstrip()


def _default_signals() -> None:
    """In the child: make the pty its controlling terminal (so Ctrl-C typed there is SIGINT), and
    restore default SIGINT/SIGQUIT even if the test runner ignores them (a background job
    inherits SIGINT as ignored, and so would every child)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
