"""Children that get Ctrl-C as a person's terminal would deliver it.

A test run started in the background (`pytest &`, CI runners, `nohup`) inherits SIGINT as
ignored, and so would every child it starts: Python then never raises KeyboardInterrupt. Pass
``preexec_fn=default_signals`` to any child a test sends SIGINT to.
"""

from __future__ import annotations

import signal


def default_signals() -> None:
    """Restore the default SIGINT and SIGQUIT handlers (runs in the child before exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
