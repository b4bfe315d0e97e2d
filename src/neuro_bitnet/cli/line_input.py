"""Reading `neuro chat` input the way a shell does.

On a terminal: GNU readline line editing and a history kept between sessions; Ctrl-C clears
the line being typed, a second Ctrl-C right after it (nothing typed in between) quits, Ctrl-D
quits. Piped input is read line by line with no prompt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import platformdirs

HISTORY_LINES = 1000
HINT = "(Ctrl-C again to quit, or Ctrl-D or /exit)"


def history_path() -> Path:
    """Where chat input history is kept (`~/.local/state/neuro-bitnet/chat_history` on Linux)."""
    return Path(platformdirs.user_state_dir("neuro-bitnet")) / "chat_history"


class LineReader:
    """Reads one line at a time; ``read`` returns None when the person wants to quit."""

    def __init__(self, prompt: str, *, interactive: bool | None = None, history: Path | None = None) -> None:
        self.interactive = sys.stdin.isatty() if interactive is None else interactive
        # \001 and \002 mark a prompt's colour codes for readline; elsewhere they would be printed
        self.prompt = prompt if sys.stdout.isatty() else prompt.replace("\001", "").replace("\002", "")
        self.history = history if history is not None else history_path()
        self._armed = False  # the last thing at the prompt was a Ctrl-C
        self._readline = None
        if self.interactive:
            self._setup_readline()

    def _setup_readline(self) -> None:
        try:
            import readline
        except ImportError:  # pragma: no cover - Python built without readline: plain input()
            return
        self._readline = readline
        readline.set_history_length(HISTORY_LINES)
        try:
            readline.read_history_file(self.history)
        except (FileNotFoundError, OSError):
            pass

    def read(self) -> str | None:
        """The next line (without its newline), or None on Ctrl-D / end of input / Ctrl-C twice."""
        if not self.interactive:
            line = sys.stdin.readline()
            return line.rstrip("\n") if line else None
        while True:
            try:
                line = input(self.prompt)
            except EOFError:
                sys.stderr.write("\n")
                return None
            except KeyboardInterrupt:
                if self._armed and not self._typed():
                    sys.stderr.write("\n")
                    return None
                self._armed = True  # the line is dropped; the next Ctrl-C on an empty line quits
                sys.stderr.write(f"\n{HINT}\n")
                sys.stderr.flush()
                continue
            self._armed = False
            return line

    def _typed(self) -> str:
        """What was on the line when Ctrl-C came (readline keeps it until the next prompt)."""
        return self._readline.get_line_buffer() if self._readline is not None else ""

    def save(self) -> None:
        """Write the history file (a failure to write it is not worth an error)."""
        if self._readline is None:
            return
        try:
            self.history.parent.mkdir(parents=True, exist_ok=True)
            self._readline.write_history_file(self.history)
        except OSError:
            pass
