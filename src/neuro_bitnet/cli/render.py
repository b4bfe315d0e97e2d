"""Showing a streamed answer: live markdown on a terminal, plain text when piped."""

from __future__ import annotations

import sys
from typing import Iterable, TextIO


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
        from rich.live import Live
        from rich.markdown import Markdown

        console = Console(file=self.out)
        if not self.stream:
            parts.extend(pieces)
            console.print(Markdown("".join(parts).strip()))
            return
        # Live re-renders at a fixed rate (not per token), which keeps the screen from flickering.
        with Live(Markdown(""), console=console, refresh_per_second=8, vertical_overflow="visible") as live:
            try:
                for piece in pieces:
                    parts.append(piece)
                    live.update(Markdown("".join(parts)))
            finally:
                live.update(Markdown("".join(parts)))
