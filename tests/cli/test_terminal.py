"""`neuro ask` and `neuro chat` on a real pseudo-terminal, read back through a VT100 emulator:
what stays in the scrollback, the loading spinner, and chat's shell-like line input."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

from support.chat_stub import chat_stub
from support.pty_term import PtySession

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bitnet-b1.58" / "model.gguf"
ROWS = 15
PROMPT = ">>>"
HINT = "(Ctrl-C again to quit, or Ctrl-D or /exit)"


def neuro_pty(env, *args, rows: int = ROWS, cols: int = 80) -> PtySession:
    return PtySession([sys.executable, "-m", "neuro_bitnet.cli.main", *args], rows=rows, cols=cols, env=env)


def expected_rows(n: int) -> list[str]:
    """How the stub's list answer looks once styled: numbers kept, bold markers gone."""
    return [f" {i}. Item number {i} of the long list" for i in range(1, n + 1)]


def assert_once_in_order(lines: list[str], wanted: list[str]) -> None:
    counts = Counter(lines)
    repeated = {row: counts[row] for row in wanted if counts[row] != 1}
    assert not repeated, f"rows not shown exactly once: {repeated}\n" + "\n".join(lines)
    positions = [lines.index(row) for row in wanted]
    assert positions == sorted(positions)


# -- 12.5: the scrollback holds a long answer exactly once --------------------------------------
def test_a_long_streamed_answer_is_in_the_scrollback_exactly_once(env):
    with chat_stub() as stub:
        env["NEURO_DAEMON_URL"] = stub.url
        session = neuro_pty(env, "ask", "list 60", "--backend", "daemon")
        assert session.finish() == 0
    lines = session.lines()
    assert_once_in_order(lines, ["Here is the list:", *expected_rows(60)])
    assert "**" not in "\n".join(lines)


@pytest.mark.slow
def test_chat_answers_are_in_the_scrollback_exactly_once(env):
    with chat_stub() as stub:
        env["NEURO_DAEMON_URL"] = stub.url
        session = neuro_pty(env, "chat", "--backend", "daemon")
        session.wait_for_text(PROMPT)
        session.send("list 40\r")
        session.wait_for(lambda: any("40. Item number 40" in line for line in session.lines()))
        session.wait_for(lambda: session.lines()[-1].startswith(PROMPT))
        session.send("list 30\r")
        session.wait_for(lambda: sum("30. Item number 30" in line for line in session.lines()) == 2)
        session.send("/exit\r")
        assert session.finish() == 0
    lines = session.lines()
    first = lines.index(expected_rows(40)[0])
    second = first + 40
    assert lines[first:first + 40] == expected_rows(40)
    assert Counter(lines)[expected_rows(40)[-1]] == 1
    assert expected_rows(30) == [row for row in lines[second:] if row.startswith(" ") and "Item" in row]


@pytest.mark.slow
def test_a_terminal_shows_a_spinner_while_the_model_loads(env):
    session = neuro_pty(env, "ask", "hi", "--model", str(FIXTURE), "--max-tokens", "2")
    assert session.finish() == 0
    raw = session.raw.decode("utf-8", "replace")
    assert "Loading model.gguf" in raw
    assert "Loading model.gguf" not in "\n".join(session.lines())  # gone once loaded


# -- 12.6: chat reads lines like a shell ----------------------------------------------------------
def test_ctrl_c_clears_the_line_and_keeps_the_conversation_then_twice_quits(env, tmp_path):
    with chat_stub() as stub:
        env["NEURO_DAEMON_URL"] = stub.url
        session = neuro_pty(env, "chat", "--backend", "daemon")
        session.wait_for_text(PROMPT)
        session.send("list 2\r")
        session.wait_for(lambda: any("2. Item number 2" in line for line in session.lines()))
        session.wait_for(lambda: session.lines()[-1].startswith(PROMPT))
        session.send("this line is abandoned")
        session.wait_for_text("abandoned")
        session.send("\x03")
        session.wait_for_text(HINT)
        session.send("list 3\r")  # typed after the Ctrl-C: the abandoned text is gone
        session.wait_for(lambda: any("3. Item number 3" in line for line in session.lines()))
        session.wait_for(lambda: session.lines()[-1].startswith(PROMPT))
        session.send("\x1b[A\r")  # up arrow: the last line again, from the history
        session.wait_for(lambda: sum("3. Item number 3" in line for line in session.lines()) == 2)
        session.wait_for(lambda: session.lines()[-1].startswith(PROMPT))
        hints = lambda: session.raw.count(HINT.encode())  # noqa: E731
        before = hints()
        session.send("\x03")
        session.wait_for(lambda: hints() == before + 1)
        session.send("second thought")  # typed after a Ctrl-C: the next Ctrl-C clears it, no more
        session.wait_for_text("second thought")
        session.send("\x03")
        session.wait_for(lambda: hints() == before + 2)
        session.send("\x03")  # a second Ctrl-C right after the first one quits
        assert session.finish() == 0
        assert hints() == before + 2
        chats = stub.chats()
    assert [c[-1]["content"] for c in chats] == ["list 2", "list 3", "list 3"]
    assert len(chats[2]) == 1 + 2 * 2 + 1  # system, two earlier exchanges, the question
    history = tmp_path / "state" / "neuro-bitnet" / "chat_history"
    assert "list 3" in history.read_text()


@pytest.mark.slow
def test_ctrl_d_at_the_prompt_quits(env):
    with chat_stub() as stub:
        env["NEURO_DAEMON_URL"] = stub.url
        session = neuro_pty(env, "chat", "--backend", "daemon")
        session.wait_for_text(PROMPT)
        session.send("\x04")
        assert session.finish() == 0
