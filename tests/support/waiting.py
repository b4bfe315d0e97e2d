"""Waiting on a condition in tests: poll it, never assume how fast the machine is."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], bool], timeout: float = 120.0) -> bool:
    """True as soon as ``predicate()`` is; False if it is still not after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
