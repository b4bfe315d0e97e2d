"""Holds back streamed text that might be the start of a stop string."""

from __future__ import annotations


class StopStringFilter:
    """Feed text pieces; get back what is safe to show and whether a stop string was reached."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def push(self, text: str) -> tuple[str, bool]:
        """Returns (text to emit now, stopped)."""
        if not self.stops:
            return text, False
        self.pending += text
        hits = [self.pending.find(s) for s in self.stops if s in self.pending]
        if hits:
            cut = min(hits)
            out, self.pending, self.stopped = self.pending[:cut], "", True
            return out, True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out) :]
        return out, False

    def flush(self, text: str = "") -> str:
        """At the end of generation: everything held back (plus ``text``), unless stopped."""
        if self.stopped:
            return ""
        out, _ = self.push(text)
        rest, self.pending = self.pending, ""
        return out + rest
