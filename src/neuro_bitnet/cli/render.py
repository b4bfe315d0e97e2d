"""Showing a streamed answer: styled markdown on a terminal, plain text when piped.

On a terminal every finished line is printed once, above a one-line live preview of the line
being written (cropped to the screen), so the scrollback holds the answer exactly once however
long it is.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterable, Iterator, TextIO

if TYPE_CHECKING:  # rich is imported for a terminal only (piped answers are plain text)
    from rich.console import Console
    from rich.text import Text

REFRESH_PER_SECOND = 8  # the live preview is redrawn at this rate, not per token


class AnswerRenderer:
    """Consumes text pieces as they arrive and shows them; returns the full answer."""

    def __init__(self, stream: bool, markdown: bool | None = None, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.stream = stream
        self.markdown = self.out.isatty() if markdown is None else markdown

    def render(self, pieces: Iterable[str]) -> str:
        """Show ``pieces`` and return the concatenated text (also when interrupted part-way)."""
        parts: list[str] = []
        if self.markdown:
            self._render_markdown(pieces, parts)
        elif self.stream:
            for piece in pieces:
                parts.append(piece)
                self.out.write(piece)
                self.out.flush()
            self.out.write("\n")
        else:
            parts.extend(pieces)
            self.out.write("".join(parts).strip() + "\n")
        self.out.flush()
        return "".join(parts)

    def _render_markdown(self, pieces: Iterable[str], parts: list[str]) -> None:
        from rich.console import Console
        from rich.text import Text

        from neuro_bitnet.cli.markdown_lines import LineStyler

        console = Console(file=self.out, highlight=False)
        styler = LineStyler()
        if not self.stream:
            parts.extend(pieces)
            for line in "".join(parts).strip().splitlines():
                console.print(styler.style(line))
            return
        from rich.live import Live

        pending = ""
        started = False  # leading blank lines of an answer are not printed
        live = Live(Text(""), console=console, refresh_per_second=REFRESH_PER_SECOND, transient=True,
                    vertical_overflow="crop")
        try:
            with live:
                for piece in pieces:
                    parts.append(piece)
                    pending += piece
                    *finished, pending = pending.split("\n")
                    for line in finished:
                        if started or line.strip():
                            started = True
                            console.print(styler.style(line))
                    live.update(_fit(styler.preview(pending), console), refresh=False)
        finally:
            if pending.strip():
                console.print(styler.style(pending))


def _fit(text: Text, console: Console) -> Text:
    """The end of ``text`` if it would take more rows than the screen has (less one)."""
    room = max(1, console.size.height - 1) * max(1, console.size.width) - 1
    return text[-room:] if len(text) > room else text


@contextmanager
def loading_spinner(model: str) -> Iterator[None]:
    """"Loading MODEL..." with a spinner on stderr while the block runs, on a terminal only."""
    from pathlib import Path

    from neuro_bitnet.cli.console import err_console

    if not sys.stderr.isatty():  # (before making a rich console: rich is not imported when piped)
        yield
        return
    console = err_console()
    if not console.is_terminal:
        yield
        return
    with console.status(f"Loading {Path(model).name}...", spinner="dots"):
        yield
