"""What a new user meets first: translation of whole texts, options that are checked before the
model loads, stdin that is waited for out loud. Real `neuro` processes throughout; the daemon
they talk to is a stand-in on 127.0.0.1 whose answers are predictable (tests/support/chat_stub.py).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from support.chat_stub import chat_stub
from support.cli_run import neuro

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bitnet-b1.58" / "model.gguf"
MISSING_MODEL = "/nonexistent/never-loaded.gguf"  # a check that loads the model first fails on this
DOCUMENT = (
    "El perro corre por el parque cada mañana.\n"
    "Después vuelve a casa muy cansado.\n\n"
    "El gato duerme en el sofá toda la tarde.\n\n"
    "Los pájaros cantan en los árboles del jardín.\n"
)


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    return lines[-1]


# -- 12.1 / 12.2: translation keeps the whole text, in ask and in chat --------------------------
@pytest.mark.slow
def test_a_piped_document_is_translated_whole(env):
    with chat_stub() as stub:
        env["NEURO_DAEMON_URL"] = stub.url
        result = neuro(env, "ask", "Resume esto", "--translate", "--json", "--backend", "daemon", input=DOCUMENT)
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        whole = f"Resume esto\n\n{DOCUMENT.strip()}"
        assert data["language"] == "es"
        assert data["translated_question"] == whole.upper()  # every paragraph, label stripped
        (chat,) = stub.chats()
        assert chat[-1]["content"] == whole.upper()
        assert "Always reply in Spanish" in chat[0]["content"]
        assert data["answer"] == "ANSWER: " + whole.upper()


@pytest.mark.slow
def test_chat_translates_each_turn_and_asks_for_the_users_language(env):
    turns = ("¿Dónde está la biblioteca de la ciudad?\n"
             "What time does the library open on Sunday?\n"
             "Merci beaucoup, et où se trouve la gare centrale?\n/exit\n")
    with chat_stub() as stub:
        env["NEURO_DAEMON_URL"] = stub.url
        result = neuro(env, "chat", "--translate", "--verbose", "--backend", "daemon", input=turns)
        assert result.returncode == 0, result.stderr
        chats = stub.chats()
    assert len(chats) == 3
    spanish, english, french = chats
    assert spanish[-1]["content"] == "¿DÓNDE ESTÁ LA BIBLIOTECA DE LA CIUDAD?"
    assert spanish[0]["content"].endswith("Always reply in Spanish.")
    assert english[-1]["content"] == "What time does the library open on Sunday?"
    assert "Always reply" not in english[0]["content"]
    assert french[0]["content"].endswith("Always reply in French.")
    # the conversation keeps the English turns and the answers
    assert [m["role"] for m in french] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert french[1]["content"] == spanish[-1]["content"]
    assert "language: es" in result.stderr and "language: fr" in result.stderr


@pytest.mark.slow
def test_chat_reply_in_without_translate_asks_for_that_language(env):
    with chat_stub() as stub:
        env["NEURO_DAEMON_URL"] = stub.url
        result = neuro(env, "chat", "--reply-in", "de", "--backend", "daemon", input="Hello there\n/exit\n")
        assert result.returncode == 0, result.stderr
        (chat,) = stub.chats()
    assert chat[-1]["content"] == "Hello there" and chat[0]["content"].endswith("Always reply in German.")


@pytest.mark.parametrize("command", ["ask", "chat"])
def test_an_unknown_reply_language_is_refused_before_anything_loads(env, command):
    args = [command, "--reply-in", "klingon", "--model", MISSING_MODEL] + (["hi"] if command == "ask" else [])
    result = neuro(env, *args)
    assert result.returncode == 2
    assert "klingon" in result.stderr and "es (Spanish)" in result.stderr
    assert "not found" not in result.stderr


# -- 12.9: cheap checks first --------------------------------------------------------------------
def test_a_missing_index_fails_before_the_model_is_looked_at(env, tmp_path):
    result = neuro(env, "ask", "hi", "--storage", str(tmp_path / "nope"), "--model", MISSING_MODEL)
    assert result.returncode == 6, result.stderr
    assert one_error_line(result).startswith("error: no index in")


def test_an_unknown_web_provider_fails_before_the_model_is_looked_at(env):
    env["NEURO_BITNET_WEB_PROVIDER"] = "altavista"
    result = neuro(env, "ask", "hi", "--web", "--model", MISSING_MODEL)
    assert result.returncode == 2, result.stderr
    assert "unknown web provider 'altavista'" in one_error_line(result)


def test_serve_on_a_busy_port_fails_before_the_model_is_looked_at(env):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = neuro(env, "serve", "--port", str(port), "--model", MISSING_MODEL)
    assert result.returncode == 6, result.stderr
    assert one_error_line(result) == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_index_of_a_missing_path_fails_and_creates_no_index(env, tmp_path):
    storage = tmp_path / "index"
    result = neuro(env, "index", str(tmp_path / "nope" / "path"), "--storage", str(storage))
    assert result.returncode == 2
    assert "no such file or directory" in result.stderr
    assert not storage.exists()


@pytest.mark.slow
def test_ask_says_it_is_waiting_for_a_silent_pipe(env):
    proc = subprocess.Popen([sys.executable, "-m", "neuro_bitnet.cli.main", "ask", "What is this?", "--json",
                             "--model", str(FIXTURE), "--max-tokens", "2", "--temperature", "0"],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    said = threading.Event()
    stderr: list[str] = []

    def watch() -> None:
        for line in proc.stderr:
            stderr.append(line)
            if "waiting for text on stdin" in line:
                said.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        assert said.wait(120), "".join(stderr)
        proc.stdin.write("BitNet uses ternary weights.\n")
        proc.stdin.close()
        out = proc.stdout.read()
        assert proc.wait(120) == 0, "".join(stderr)
    finally:
        if proc.poll() is None:
            proc.kill()
    watcher.join(10)
    assert json.loads(out)["usage"]["prompt_tokens"] > 10
