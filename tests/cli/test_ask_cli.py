"""`neuro ask` and `neuro chat` as a person runs them: real processes on a real (tiny) model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neuro_bitnet.answering import DEFAULT_SYSTEM_PROMPT
from neuro_bitnet.engine import load_model

from support.cli_run import FIXTURE, ask_json, neuro
from support.recorded_web import base_url, recorded_web_server

QUESTION = "What is BitNet?"


def greedy_answer(question: str, max_tokens: int) -> str:
    model = load_model(FIXTURE, threads=2, ctx_size=4096)
    messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": question}]
    return "".join(model.chat(messages, max_tokens=max_tokens, temperature=0)).strip()


def assert_one_clear_error(result, code: int, *words: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for word in words:
        assert word in lines[0]


@pytest.mark.slow
def test_json_answer_is_the_engines_greedy_answer(env):
    data = ask_json(env, QUESTION, "--temperature", "0", "--max-tokens", "12")
    assert data["answer"] == greedy_answer(QUESTION, 12)
    assert data["backend"] == "native" and data["finish_reason"] in ("length", "stop")
    usage = data["usage"]
    assert usage["completion_tokens"] >= 1 and usage["prompt_tokens"] > 10
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert data["timings"]["time_to_first_token_seconds"] > 0


def test_piped_output_is_plain_streamed_text(env):
    result = neuro(env, "ask", QUESTION, "--model", str(FIXTURE), "--temperature", "0", "--max-tokens", "12")
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout
    assert result.stdout.strip() == greedy_answer(QUESTION, 12)


@pytest.mark.slow
def test_stdin_is_added_to_the_question(env):
    alone = ask_json(env, "summarize", "--temperature", "0", "--max-tokens", "2")
    piped = ask_json(env, "summarize", "--temperature", "0", "--max-tokens", "2",
                     input="BitNet b1.58 uses ternary weights.\n")
    assert piped["usage"]["prompt_tokens"] > alone["usage"]["prompt_tokens"]
    only_stdin = ask_json(env, "--temperature", "0", "--max-tokens", "2", input="What is a ternary weight?")
    assert only_stdin["usage"]["prompt_tokens"] > 10


def test_timing_lines(env):
    result = neuro(env, "ask", QUESTION, "--model", str(FIXTURE), "--max-tokens", "8", "--timing", "--seed", "3")
    assert result.returncode == 0, result.stderr
    for label in ("load:", "first token:", "prompt:", "generated:", "total:"):
        assert label in result.stderr
    assert "tok/s" in result.stderr


@pytest.mark.slow
def test_sampling_is_reproducible_with_a_seed(env):
    a = ask_json(env, QUESTION, "--seed", "7", "--temperature", "1.0", "--max-tokens", "10")
    b = ask_json(env, QUESTION, "--seed", "7", "--temperature", "1.0", "--max-tokens", "10")
    assert a["answer"] == b["answer"]


@pytest.mark.slow
def test_errors_are_one_clear_line_with_meaningful_exit_codes(env, tmp_path):
    assert_one_clear_error(neuro(env, "ask", "hi", "--model", str(tmp_path / "missing.gguf")), 3, "not found")
    assert_one_clear_error(neuro(env, "ask", "hi", "--model", "no-such-model"), 3, "no-such-model")
    long_question = "word " * 400
    assert_one_clear_error(neuro(env, "ask", long_question, "--model", str(FIXTURE), "--ctx-size", "64"), 5,
                           "context")
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(FIXTURE.read_bytes()[:5000])
    assert_one_clear_error(neuro(env, "ask", "hi", "--model", str(corrupt)), 5, "truncated")
    no_daemon = neuro(env, "ask", "hi", "--backend", "daemon")
    assert no_daemon.returncode != 0 and "no neuro daemon" in no_daemon.stderr and "Traceback" not in no_daemon.stderr
    usage = neuro(env, "ask", "--model", str(FIXTURE))
    assert usage.returncode == 2 and "give a question" in usage.stderr


@pytest.mark.slow
def test_missing_model_without_a_terminal_refuses_with_a_hint(env):
    result = neuro(env, "ask", "hi", "--model", "2b")
    assert_one_clear_error(result, 3, "--yes")


@pytest.mark.slow
def test_translate_detects_the_language_and_reports_it(env):
    result = neuro(env, "ask", "¿Cuál es la capital de Francia?", "--model", str(FIXTURE), "--translate",
                   "--verbose", "--temperature", "0", "--max-tokens", "4", "--json")
    assert result.returncode == 0, result.stderr
    assert "language: es" in result.stderr
    data = json.loads(result.stdout)
    assert data["language"] == "es" and data["translated_question"]


@pytest.mark.slow
def test_storage_grounds_the_answer_and_lists_sources(env, tmp_path):
    from support.tiny_embedder import build_tiny_embedder

    embedder = build_tiny_embedder(tmp_path / "embedder")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "dogs.md").write_text("# Dogs\n\nThe dog is a loyal animal that likes to run.\n")
    (docs / "cats.md").write_text("# Cats\n\nThe cat sleeps most of the day.\n")
    store = tmp_path / "store"
    indexed = neuro(env, "index", str(docs), "--storage", str(store), "--embedder", str(embedder))
    assert indexed.returncode == 0, indexed.stderr
    plain = ask_json(env, "Which animal likes to run?", "--temperature", "0", "--max-tokens", "4")
    grounded = ask_json(env, "Which animal likes to run?", "--storage", str(store), "--temperature", "0",
                        "--max-tokens", "4")
    assert grounded["sources"], grounded
    assert {Path(s["path"]).name for s in grounded["sources"]} <= {"dogs.md", "cats.md"}
    assert grounded["sources"][0]["n"] == 1
    assert grounded["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"]
    text = neuro(env, "ask", "Which animal likes to run?", "--model", str(FIXTURE), "--storage", str(store),
                 "--max-tokens", "4")
    assert text.returncode == 0 and "Sources:" in text.stdout and "[1] " in text.stdout


@pytest.mark.slow
def test_web_context_cites_urls_and_degrades_offline(env):
    with recorded_web_server() as server:
        env["NEURO_BITNET_WIKIPEDIA_URL"] = base_url(server) + "/{lang}"
        data = ask_json(env, "What is the capital of France?", "--web", "--temperature", "0", "--max-tokens", "4")
    assert data["sources"] and data["sources"][0]["url"] == "https://en.wikipedia.org/wiki/Paris"
    env["NEURO_BITNET_WIKIPEDIA_URL"] = "http://127.0.0.1:9/{lang}"
    offline = neuro(env, "ask", "What is the capital of France?", "--model", str(FIXTURE), "--web",
                    "--max-tokens", "4")
    assert offline.returncode == 0, offline.stderr
    assert "web search unavailable" in offline.stderr


@pytest.mark.slow
def test_chat_session_with_commands(env):
    script = "Hello there\n/system Answer in one word.\nAnd now?\n/reset\n/nonsense\nBye\n/exit\n"
    result = neuro(env, "chat", "--model", str(FIXTURE), "--max-tokens", "6", "--temperature", "0", input=script)
    assert result.returncode == 0, result.stderr
    assert "system prompt set" in result.stderr
    assert "conversation cleared" in result.stderr
    assert "unknown command /nonsense" in result.stderr


@pytest.mark.slow
def test_chat_drops_old_turns_when_the_context_fills(env):
    turns = "".join(f"Tell me fact number {i} about ternary networks please\n" for i in range(12))
    result = neuro(env, "chat", "--model", str(FIXTURE), "--ctx-size", "160", "--max-tokens", "8",
                   "--temperature", "0", input=turns + "/exit\n")
    assert result.returncode == 0, result.stderr
    assert "dropped" in result.stderr
