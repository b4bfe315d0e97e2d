"""Progress of downloads and conversions: a rich bar on a terminal, plain lines when piped, or nothing."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Protocol, TextIO

from rich.filesize import decimal as format_size

if TYPE_CHECKING:  # rich's console and bars are imported when a bar is shown
    from rich.console import Console
    from rich.progress import Progress


class ProgressReporter(Protocol):
    """What a download reports to. `finish` is always called, also on failure."""

    def note(self, message: str) -> None: ...

    def start(self, label: str, total: int | None, completed: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    """Reports nothing."""

    def note(self, message: str) -> None:
        pass

    def start(self, label: str, total: int | None, completed: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class LineProgress:
    """Quiet line-based progress for logs and pipes: one line per 10%, or per 10 s if no total."""

    def __init__(self, stream: TextIO | None = None, verb: str = "downloading") -> None:
        self.stream = stream or sys.stderr
        self.verb = verb
        self.label = ""
        self.total: int | None = None
        self.done = 0
        self._new = 0
        self._t0 = 0.0
        self._next_step = 0
        self._last_line = 0.0

    def _write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def note(self, message: str) -> None:
        self._write(message)

    def start(self, label: str, total: int | None, completed: int) -> None:
        self.label, self.total, self.done, self._new = label, total, completed, 0
        self._t0 = self._last_line = time.monotonic()
        size = format_size(total) if total else "unknown size"
        resumed = f", resuming at {format_size(completed)}" if completed else ""
        self._write(f"{self.verb} {label} ({size}{resumed})")
        self._next_step = (completed * 10 // total + 1) if total else 0

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        self._new += nbytes
        now = time.monotonic()
        if self.total:
            step = self.done * 10 // self.total
            if step >= self._next_step and self.done < self.total:
                self._next_step = step + 1
                self._line(now)
        elif now - self._last_line >= 10:
            self._line(now)

    def _line(self, now: float) -> None:
        self._last_line = now
        rate = self._new / max(now - self._t0, 1e-6)
        text = f"  {self.label}: {format_size(self.done)}"
        if self.total:
            text += f" / {format_size(self.total)} ({self.done * 100 // self.total}%)"
        text += f", {format_size(int(rate))}/s"
        if self.total and rate > 0:
            text += f", ETA {_duration((self.total - self.done) / rate)}"
        self._write(text)

    def finish(self) -> None:
        pass


class RichProgress:
    """A progress bar with bytes, rate and ETA on the terminal (stderr)."""

    def __init__(self, console: Console | None = None, verb: str = "downloading") -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.verb = verb
        self._progress: Progress | None = None
        self._task = None

    def note(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False)

    def start(self, label: str, total: int | None, completed: int) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.finish()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(f"{self.verb} {label}", total=total, completed=completed)

    def advance(self, nbytes: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, nbytes)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def make_progress(enabled: bool = True, stream: TextIO | None = None, verb: str = "downloading") -> ProgressReporter:
    """A rich bar if `stream` (default stderr) is a terminal, plain lines otherwise."""
    if not enabled:
        return NullProgress()
    stream = stream or sys.stderr
    if stream.isatty():
        from rich.console import Console

        return RichProgress(Console(file=stream), verb)
    return LineProgress(stream, verb)
