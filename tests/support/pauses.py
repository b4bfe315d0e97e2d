"""The test side of `neuro_bitnet.config.pause_point`: hold a process's work at a named point.

A process started with ``NEURO_BITNET_TEST_PAUSE=DIR`` holds at pause point ``NAME`` while the
file ``DIR/NAME`` exists, and announces that it got there with ``DIR/NAME.reached``. So a test can
act while an answer is still streaming or an indexer is half-way, without racing the clock:

    with pauses.hold("generation"):
        ...start the work...
        pauses.wait_reached("generation")
        ...act (press Stop, hang up, kill)...
    # leaving the block releases the work
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from neuro_bitnet.config import TEST_PAUSE_ENV

WAIT = 120.0  # seconds: generous, the machine may be busy; nothing here measures speed


class Pauses:
    """The pause directory of one process (give it ``env()``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        """The environment variable that points a process at this directory."""
        return {TEST_PAUSE_ENV: str(self.directory)}

    def _reached(self, point: str) -> Path:
        return self.directory / f"{point}.reached"

    @contextmanager
    def hold(self, point: str) -> Iterator[None]:
        """Hold work at ``point`` inside the block; released (and forgotten) on leaving it."""
        self._reached(point).unlink(missing_ok=True)
        (self.directory / point).touch()
        try:
            yield
        finally:
            self.release(point)
            self._reached(point).unlink(missing_ok=True)

    def release(self, point: str) -> None:
        """Let work held at ``point`` go on (and not hold there again)."""
        (self.directory / point).unlink(missing_ok=True)

    def reached(self, point: str) -> bool:
        """Whether work has reached ``point`` since the hold began."""
        return self._reached(point).exists()

    def wait_reached(self, point: str, alive: Callable[[], bool] = lambda: True, timeout: float = WAIT) -> None:
        """Wait until work is held at ``point``; AssertionError if it is not within ``timeout`` or
        ``alive()`` turns false (the process died) first."""
        deadline = time.monotonic() + timeout
        while not self.reached(point):
            assert alive(), f"the process ended before reaching pause point {point!r}"
            assert time.monotonic() < deadline, f"pause point {point!r} not reached within {timeout:.0f}s"
            time.sleep(0.02)
