"""Conversion progress: a rich bar on a terminal, a line per 10% when piped, or nothing."""

from __future__ import annotations

import sys
from typing import Protocol, TextIO

from rich.console import Console
from rich.filesize import decimal as format_size
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ConvertProgress(Protocol):
    """What a conversion reports to: bytes of the output file written so far."""

    def start(self, label: str, total: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def finish(self) -> None: ...


class NullConvertProgress:
    def start(self, label: str, total: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


class LineConvertProgress:
    """One line at the start, then one per 10% of the output written."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.label, self.total, self.done, self._next = "", 1, 0, 1

    def start(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self._next = label, max(total, 1), 0, 1
        print(f"converting {label} ({format_size(total)} GGUF)", file=self.stream, flush=True)

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        step = self.done * 10 // self.total
        if step >= self._next:
            self._next = step + 1
            print(f"  {self.label}: {self.done * 100 // self.total}% converted", file=self.stream, flush=True)

    def finish(self) -> None:
        pass


class RichConvertProgress:
    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._task = None

    def start(self, label: str, total: int) -> None:
        self.finish()
        self._progress = Progress(
            TextColumn("[bold]converting {task.description}"), BarColumn(), DownloadColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
        )
        self._progress.start()
        self._task = self._progress.add_task(label, total=total)

    def advance(self, nbytes: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, nbytes)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def make_convert_progress(enabled: bool = True, stream: TextIO | None = None) -> ConvertProgress:
    """A rich bar if ``stream`` (default stderr) is a terminal, plain lines otherwise."""
    if not enabled:
        return NullConvertProgress()
    stream = stream or sys.stderr
    if stream.isatty():
        return RichConvertProgress(Console(file=stream))
    return LineConvertProgress(stream)
