"""Terminal helpers shared by commands.

Results go to stdout (plain aligned text, or JSON with `--json`); status, progress and questions
go to stderr, styled on a terminal and plain when piped.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.filesize import decimal as _decimal

from neuro_bitnet.errors import NeuroError

if TYPE_CHECKING:  # imported when something is written to stderr, not by every command
    from rich.console import Console

_err_console: Console | None = None


def err_console() -> Console:
    """A rich Console on stderr (colours and live progress on a terminal, plain text otherwise)."""
    from rich.console import Console

    global _err_console
    if _err_console is None or _err_console.file is not sys.stderr:
        _err_console = Console(stderr=True, highlight=False)
    return _err_console


def is_interactive() -> bool:
    """True when a person can answer questions: stdin and stderr are terminals."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def status(message: str, style: str | None = None) -> None:
    """One status line on stderr (styled on a terminal only)."""
    err_console().print(message, style=style, markup=False, soft_wrap=True)


def warn(message: str) -> None:
    status(f"warning: {message}", style="yellow")


def format_size(nbytes: int | None) -> str:
    """Bytes as a human size with decimal units ("1.2 GB"), or "?" when unknown."""
    return "?" if nbytes is None else _decimal(nbytes)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def print_json(data: Any) -> None:
    """Write `data` as indented JSON on stdout (paths and dataclasses included)."""
    click.echo(json.dumps(data, indent=2, default=_jsonable))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Aligned plain-text columns on stdout, never truncated (pipes and `grep` friendly)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    for line in [headers, *rows]:
        cells = [cell.ljust(w) for cell, w in zip(line, widths)]
        click.echo("  ".join(cells).rstrip())


def confirm(question: str, *, assume_yes: bool, refuse_hint: str) -> bool:
    """Ask a yes/no question on a terminal; `assume_yes` answers yes.

    Without a terminal (and without `assume_yes`) raises NeuroError with `refuse_hint`.
    """
    if assume_yes:
        return True
    if not is_interactive():
        raise NeuroError(refuse_hint)
    return click.confirm(question, default=False, err=True)


def download_question() -> Callable[[str], bool] | None:
    """How to ask before downloading a missing model: on a terminal a yes/no question
    (default yes), without one None (nobody can answer: the download is refused with a hint)."""
    if not is_interactive():
        return None
    return lambda question: click.confirm(question, default=True, err=True)
