"""Markdown styled one line at a time, for answers that are printed as they stream.

A streamed answer is shown line by line: each finished line is printed once and never redrawn,
so a line must be styled without seeing the lines after it. This covers what answers use:
headings, bullet and numbered lists, quotes, code fences, rules, and inline bold, italics, code
and links. Anything else is shown as written.
"""

from __future__ import annotations

import re

from rich.text import Text

FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^(\s*)(\d{1,3}[.)])\s+(.*)$")
_QUOTE = re.compile(r"^\s*>\s?(.*)$")
_RULE = re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$")
_INLINE = re.compile(
    r"(?P<code>`[^`]+`)|(?P<bold>\*\*[^*]+\*\*|__[^_]+__)|(?P<italic>\*[^*\s][^*]*\*|_[^_\s][^_]*_)"
    r"|(?P<link>\[[^\]]+\]\([^)\s]+\))"
)


def inline(text: str, base: str = "") -> Text:
    """``text`` with inline markdown (`code`, **bold**, *italics*, [links](url)) turned into styles."""
    out = Text(style=base)
    pos = 0
    for match in _INLINE.finditer(text):
        out.append(text[pos:match.start()])
        token = match.group()
        if match.lastgroup == "code":
            out.append(token[1:-1], style="bold cyan")
        elif match.lastgroup == "bold":
            out.append(token[2:-2], style="bold")
        elif match.lastgroup == "italic":
            out.append(token[1:-1], style="italic")
        else:
            label, url = token[1:].split("](", 1)
            out.append(label, style="underline")
            out.append(f" ({url[:-1]})", style="dim")
        pos = match.end()
    out.append(text[pos:])
    return out


class LineStyler:
    """Styles the lines of one answer in order; remembers whether a code block is open."""

    def __init__(self) -> None:
        self.in_code = False

    def style(self, line: str) -> Text:
        """The styled form of the finished line ``line`` (call once per line, in order)."""
        if FENCE.match(line):
            self.in_code = not self.in_code
            return Text(line.strip(), style="dim")
        return self.preview(line)

    def preview(self, line: str) -> Text:
        """The styled form of ``line`` without advancing the state (for an unfinished line)."""
        if self.in_code:
            return Text(line, style="cyan")
        if FENCE.match(line):
            return Text(line.strip(), style="dim")
        if _RULE.match(line):
            return Text("─" * 40, style="dim")
        if m := _HEADING.match(line):
            return inline(m.group(2), base="bold underline" if len(m.group(1)) <= 2 else "bold")
        if m := _BULLET.match(line):
            return _prefixed(m.group(1) + " • ", "", inline(m.group(2)))
        if m := _NUMBERED.match(line):
            return _prefixed(f"{m.group(1)} {m.group(2)} ", "bold", inline(m.group(3)))
        if m := _QUOTE.match(line):
            return _prefixed("▌ ", "dim", inline(m.group(1), base="italic"))
        return inline(line)


def _prefixed(prefix: str, style: str, rest: Text) -> Text:
    out = Text()
    out.append(prefix, style=style or None)
    out.append_text(rest)
    return out
