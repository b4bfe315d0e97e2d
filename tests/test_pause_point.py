"""The test-only pause hook (`config.pause_point`): inert unless a test holds the point."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from neuro_bitnet.config import TEST_PAUSE_ENV, pause_point

from support.pauses import Pauses


def _run(cancelled: threading.Event | None = None) -> threading.Thread:
    thread = threading.Thread(target=pause_point, args=("work", cancelled), daemon=True)
    thread.start()
    return thread


def test_without_the_variable_or_the_file_nothing_waits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TEST_PAUSE_ENV, raising=False)
    (tmp_path / "work").touch()
    pause_point("work")  # unset: returns at once, even with a hold file somewhere
    monkeypatch.setenv(TEST_PAUSE_ENV, str(tmp_path / "empty"))
    pause_point("work")  # set, but this point is not held
    assert not (tmp_path / "empty" / "work.reached").exists()


def test_a_held_point_waits_for_the_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pauses = Pauses(tmp_path)
    monkeypatch.setenv(TEST_PAUSE_ENV, str(tmp_path))
    with pauses.hold("work"):
        thread = _run()
        pauses.wait_reached("work")
        assert thread.is_alive()
        pauses.release("work")
        thread.join(60)
        assert not thread.is_alive()
    assert not pauses.reached("work")  # leaving the hold forgets it


def test_a_cancelled_job_is_not_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pauses = Pauses(tmp_path)
    monkeypatch.setenv(TEST_PAUSE_ENV, str(tmp_path))
    cancelled = threading.Event()
    with pauses.hold("work"):
        thread = _run(cancelled)
        pauses.wait_reached("work")
        cancelled.set()
        thread.join(60)
        assert not thread.is_alive()
