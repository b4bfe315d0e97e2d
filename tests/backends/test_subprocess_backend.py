"""The subprocess backend against a real llama.cpp binary (built once from the PyPI sdist).

The model is a tiny random arch-`bitnet` TQ2_0 file that both llama.cpp and our engine run, so the
same greedy answer can be checked three ways: through `neuro ask --backend subprocess`, from the
binary run by hand, and from `--backend native`.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from neuro_bitnet.backends.subprocess_cli import (
    TROUBLESHOOTING,
    CliNotFoundError,
    SubprocessBackend,
    candidate_paths,
    find_llama_cli,
)
from neuro_bitnet.config import load_settings
from neuro_bitnet.engine import load_model
from neuro_bitnet.engine.chat_format import MICROSOFT_PLACEHOLDER_TEMPLATE
from neuro_bitnet.engine.options import GenerationOptions
from neuro_bitnet.engine.sampling import Sampler, SamplingParams

from support.gguf_edit import rewrite_gguf

# The first test to use the `llama_cli` fixture may build it (several minutes on 2 cores).
pytestmark = pytest.mark.timeout(2400)

SYSTEM = "You are terse."
QUESTION = "What is BitNet?"
# The tiny model's chat template (BitNet's), as llama-cli gets it: llama.cpp adds the BOS itself.
PROMPT = f"System: {SYSTEM}<|eot_id|>User: {QUESTION}<|eot_id|>Assistant: "
ADVICE = "Or use the built-in engine: --backend native."
MARGIN = 3.0  # logits: a greedy choice this far ahead cannot flip between engines (see below)
EXACT_MARGIN = 0.2  # logits: ~10x what llama.cpp with an f32 KV cache and our exact head differ by


def executable(path: Path, text: str) -> Path:
    """Write an executable script."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def wrapper(path: Path, target: Path) -> Path:
    """An executable shell script that runs ``target`` with its arguments."""
    return executable(path, f'#!/bin/sh\nexec "{target}" "$@"\n')


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME (no ~/.local/bin/llama-cli-bitnet) and a PATH without llama-cli-bitnet."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("BITNET_CLI_PATH", raising=False)
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                               if not (Path(p) / "llama-cli-bitnet").exists()))
    return home


def run_neuro(args: list[str], home: Path, cli: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """`neuro ARGS` as a real process with an isolated HOME (and BITNET_CLI_PATH=cli if given)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("BITNET_CLI_PATH", "NEURO_BITNET_DEBUG")}
    full_env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
                    **env)
    if cli is not None:
        full_env["BITNET_CLI_PATH"] = str(cli)
    return subprocess.run([sys.executable, "-m", "neuro_bitnet.cli.main", *args], capture_output=True,
                          text=True, env=full_env, timeout=300, stdin=subprocess.DEVNULL)


def ask_args(model: Path, *extra: str, backend: str = "subprocess", max_tokens: int = 12,
             question: str = QUESTION) -> list[str]:
    return ["ask", question, "--backend", backend, "--model", str(model), "--system", SYSTEM,
            "--temperature", "0", "--seed", "1", "--max-tokens", str(max_tokens), "--threads", "1",
            "--ctx-size", "512", *extra]


def run_by_hand(cli: Path, model: Path, max_tokens: int) -> str:
    """The binary's standard output for PROMPT with the sampling settings `neuro ask` uses."""
    done = subprocess.run(
        [str(cli), "-m", str(model), "-p", PROMPT, "-n", str(max_tokens), "-t", "1", "-c", "512",
         "--temp", "0", "--seed", "1", "--top-k", "40", "--top-p", "0.95", "--repeat-penalty", "1.1",
         "-no-cnv", "--no-display-prompt"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def error_line(done: subprocess.CompletedProcess) -> str:
    """The single `error:` line of a failed run (asserting there is exactly one and no traceback)."""
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# ----------------------------------------------------------------------------- real llama.cpp
def test_backend_streams_answer(llama_cli: Path, tiny_bitnet_tq2: Path, home: Path) -> None:
    backend = SubprocessBackend(tiny_bitnet_tq2, settings=load_settings(bitnet_cli_path=llama_cli),
                                threads=1, ctx_size=512)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    assert backend.render_prompt(messages) == PROMPT
    pieces = backend.chat(messages, GenerationOptions(max_tokens=12, temperature=0, seed=1))
    first = next(pieces)
    assert first
    assert backend._process is not None  # text arrives while llama-cli is still being read
    answer = first + "".join(pieces)
    assert backend._process is None
    assert answer.strip()
    for noise in ("[end of text]", "llama", "System:", "User:", QUESTION, "<|"):
        assert noise not in answer
    stats = pieces.result
    assert stats.prompt_tokens == backend.prompt_tokens(messages)  # llama.cpp tokenizes as we do
    assert stats.generated_tokens == 12
    assert stats.finish_reason == "length"
    assert stats.prefill_seconds > 0 and stats.decode_seconds > 0 and stats.load_seconds > 0


def test_ask_equals_binary_run_by_hand(llama_cli: Path, tiny_bitnet_tq2: Path, home: Path) -> None:
    done = run_neuro(ask_args(tiny_bitnet_tq2), home, llama_cli)
    assert done.returncode == 0, done.stderr
    by_hand = run_by_hand(llama_cli, tiny_bitnet_tq2, 12)
    # By hand: the answer, then llama-cli's closing blank line (no end marker: the tiny model never
    # picks an end-of-turn token). neuro: the answer and one newline, nothing else.
    assert by_hand.endswith("\n\n") and by_hand.strip()
    assert done.stdout == by_hand[:-2] + "\n"
    assert QUESTION not in done.stdout and "System:" not in done.stdout
    assert "llama" not in done.stderr  # no banner or log of llama-cli leaks through


def greedy_margins(model_path: Path, question: str, max_tokens: int,
                   repeat_penalty: float = 1.1) -> tuple[str, list[float]]:
    """Our engine's greedy answer (exact head) and, at each step, the top-1 minus top-2 logit
    after the repeat penalty: how far each choice is from being a near tie. An f32 KV cache, as
    the scoring call's, so the answer is the one its logits rank first."""
    model = load_model(model_path, threads=1, ctx_size=512, head="exact", kv_cache="f32")
    try:
        prompt = model.render_chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])
        ids = model.tokenize(prompt, add_bos=False)
        generation = model.generate(ids, max_tokens=max_tokens, temperature=0, repeat_penalty=repeat_penalty)
        answer = "".join(generation)
        tokens = list(generation.result.tokens)
        logits = model.logits(ids + tokens)
    finally:
        model.close()
    sampler = Sampler(SamplingParams(temperature=0, repeat_penalty=repeat_penalty))
    margins = []
    for step, token in enumerate(tokens):
        row = sampler.apply_repeat_penalty(logits[len(ids) - 1 + step], ids + tokens[:step])
        assert int(row.argmax()) == token
        second, first = np.sort(row)[-2:]
        margins.append(float(first - second))
    return answer, margins


def test_ask_subprocess_agrees_with_native(llama_cli: Path, tiny_bitnet_tq2: Path, home: Path) -> None:
    """llama.cpp's `bitnet` arch and our engine compute the same model: same greedy answer.

    Not bit for bit: by default llama.cpp keeps K and V in f16 (and its flash attention rounds Q
    to f16), which moves a few int8 activation roundings, and `neuro ask` runs our int8 copy of the
    head; on this model that moves logits by up to ~1 (of a ~100 range). So the answers are
    compared over the steps whose greedy choice wins by at least MARGIN; where two tokens are nearly
    tied either engine may rightly pick the other.
    """
    question = "Name three colours."
    _, margins = greedy_margins(tiny_bitnet_tq2, question, 16)
    steps = next((i for i, m in enumerate(margins) if m < MARGIN), len(margins))
    assert steps >= 6, f"the tiny model's greedy answer has near ties early: {margins}"
    sub = run_neuro(ask_args(tiny_bitnet_tq2, "--json", max_tokens=steps, question=question), home, llama_cli)
    native = run_neuro(ask_args(tiny_bitnet_tq2, "--json", max_tokens=steps, question=question, backend="native"),
                       home)
    assert sub.returncode == 0, sub.stderr
    assert native.returncode == 0, native.stderr
    sub_result, native_result = json.loads(sub.stdout), json.loads(native.stdout)
    assert sub_result["backend"] == "subprocess" and native_result["backend"] == "native"
    assert sub_result["answer"] == native_result["answer"]
    assert sub_result["usage"] == native_result["usage"]


def test_placeholder_template_gets_the_trained_format_on_both_backends(
        llama_cli: Path, tiny_bitnet_tq2: Path, home: Path, tmp_path: Path) -> None:
    """The same model with Microsoft's placeholder template instead of the trained one: both
    backends render the trained format (the same prompt llama-cli gets), so they give the same
    answers and token counts as on the file with the trained template."""
    placeholder = rewrite_gguf(tiny_bitnet_tq2, tmp_path / "placeholder.gguf",
                               set_keys={"tokenizer.chat_template": MICROSOFT_PLACEHOLDER_TEMPLATE})
    backend = SubprocessBackend(placeholder, settings=load_settings(bitnet_cli_path=llama_cli),
                                threads=1, ctx_size=512)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    assert backend.render_prompt(messages) == PROMPT
    results = {}
    for name, model in (("trained", tiny_bitnet_tq2), ("placeholder", placeholder)):
        for kind in ("subprocess", "native"):
            done = run_neuro(ask_args(model, "--json", max_tokens=6, backend=kind), home,
                             llama_cli if kind == "subprocess" else None)
            assert done.returncode == 0, done.stderr
            result = json.loads(done.stdout)
            results[name, kind] = (result["answer"], result["usage"]["prompt_tokens"])
    assert results["placeholder", "subprocess"] == results["trained", "subprocess"]
    assert results["placeholder", "native"] == results["trained", "native"]
    assert results["placeholder", "native"][1] == results["placeholder", "subprocess"][1]


def test_llama_cpp_with_f32_cache_matches_engine(llama_cli: Path, tiny_bitnet_tq2: Path) -> None:
    """With llama.cpp's f16 roundings off (f32 KV cache, no flash attention) its `bitnet` logits
    are within ~0.02% of the logit range of our engine's exact head: 64 greedy tokens agree
    wherever the choice is not a near tie (margin under EXACT_MARGIN)."""
    _, margins = greedy_margins(tiny_bitnet_tq2, QUESTION, 64, repeat_penalty=1.0)
    steps = next((i for i, m in enumerate(margins) if m < EXACT_MARGIN), len(margins))
    assert steps >= 32, f"near ties early in the tiny model's greedy answer: {margins}"
    prefix, _ = greedy_margins(tiny_bitnet_tq2, QUESTION, steps, repeat_penalty=1.0)
    done = subprocess.run(
        [str(llama_cli), "-m", str(tiny_bitnet_tq2), "-p", PROMPT, "-n", str(steps), "-t", "1", "-c", "512",
         "--temp", "0", "--repeat-penalty", "1.0", "-ctk", "f32", "-ctv", "f32", "-fa", "off",
         "-no-cnv", "--no-display-prompt"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == prefix + "\n\n"


def test_max_tokens_is_respected(llama_cli: Path, tiny_bitnet_tq2: Path, home: Path) -> None:
    short = run_neuro(ask_args(tiny_bitnet_tq2, "--json", max_tokens=4), home, llama_cli)
    longer = run_neuro(ask_args(tiny_bitnet_tq2, "--json", max_tokens=10), home, llama_cli)
    assert short.returncode == 0 and longer.returncode == 0, short.stderr + longer.stderr
    short_result, longer_result = json.loads(short.stdout), json.loads(longer.stdout)
    assert short_result["usage"]["completion_tokens"] == 4
    assert longer_result["usage"]["completion_tokens"] == 10
    assert short_result["finish_reason"] == "length"
    # Greedy: the short answer is where the longer one starts.
    assert short_result["answer"] and longer_result["answer"].startswith(short_result["answer"])
    assert len(longer_result["answer"]) > len(short_result["answer"])


def test_timing_comes_from_llama_cli_report(llama_cli: Path, tiny_bitnet_tq2: Path, home: Path) -> None:
    done = run_neuro(ask_args(tiny_bitnet_tq2, "--timing", max_tokens=6), home, llama_cli)
    assert done.returncode == 0, done.stderr
    report = dict(re.findall(r"^(\w[\w ]*?):\s+(.+)$", done.stderr, re.MULTILINE))
    backend = SubprocessBackend(tiny_bitnet_tq2, settings=load_settings(bitnet_cli_path=llama_cli),
                                threads=1, ctx_size=512)
    n_prompt = backend.prompt_tokens([{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}])
    assert re.fullmatch(rf"{n_prompt} tokens, [\d.]+ tok/s", report["prompt"])
    assert re.fullmatch(r"6 tokens, [\d.]+ tok/s", report["generated"])
    for key in ("load", "first token", "total"):
        assert re.fullmatch(r"[\d.]+ s", report[key]), report


def test_old_build_echo_is_stripped(tiny_bitnet_tq2: Path, tmp_path: Path, home: Path) -> None:
    """A build without --no-display-prompt echoes the prompt (special tokens as nothing) first."""
    fake = executable(tmp_path / "old-llama-cli", textwrap.dedent(f"""\
        #!{sys.executable}
        import sys
        args = sys.argv[1:]
        if args == ["--help"]:
            print("usage: llama-cli -m FILE -p PROMPT -n N -t N -c N --temp T --top-k N --top-p P")
            sys.exit(0)
        prompt = args[args.index("-p") + 1]
        echo = prompt.replace("<|eot_id|>", "")
        sys.stdout.write(echo + "BitNet is a ternary model.")
        sys.stdout.write(" [end of text]\\n\\n")
        sys.stderr.write("llama_print_timings: prompt eval time = 5.00 ms / 20 tokens\\n")
        sys.stderr.write("llama_print_timings:        eval time = 7.00 ms / 5 runs\\n")
    """))
    done = run_neuro(ask_args(tiny_bitnet_tq2, "--json"), home, fake)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["answer"] == "BitNet is a ternary model."
    assert result["finish_reason"] == "stop"
    assert result["usage"] == {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26}


# ----------------------------------------------------------------------------- errors
def test_missing_binary(tiny_bitnet_tq2: Path, tmp_path: Path, home: Path) -> None:
    done = run_neuro(ask_args(tiny_bitnet_tq2), home)  # nothing set, nothing installed
    line = error_line(done)
    assert "llama-cli (bitnet.cpp) was not found" in line and ADVICE in line
    assert done.returncode == CliNotFoundError.exit_code
    assert done.stdout == ""


def test_bitnet_cli_path_that_does_not_exist(tiny_bitnet_tq2: Path, tmp_path: Path, home: Path) -> None:
    missing = tmp_path / "nowhere" / "llama-cli"
    done = run_neuro(ask_args(tiny_bitnet_tq2), home, missing)
    line = error_line(done)
    assert f"BITNET_CLI_PATH points at {missing}, which does not exist" in line and ADVICE in line
    assert done.returncode == CliNotFoundError.exit_code


def test_bitnet_cli_path_not_executable(tiny_bitnet_tq2: Path, tmp_path: Path, home: Path) -> None:
    plain = tmp_path / "llama-cli"
    plain.write_text("not a program\n")
    done = run_neuro(ask_args(tiny_bitnet_tq2), home, plain)
    line = error_line(done)
    assert "which is not an executable file" in line and ADVICE in line
    done = run_neuro(ask_args(tiny_bitnet_tq2), home, tmp_path)  # a directory
    assert "which is not an executable file" in error_line(done)


def test_failing_binary(tiny_bitnet_tq2: Path, tmp_path: Path, home: Path) -> None:
    failing = executable(tmp_path / "llama-cli", textwrap.dedent("""\
        #!/bin/sh
        echo "llama_model_load: loading model" >&2
        echo "error: unable to load model (unknown tensor type 36)" >&2
        exit 1
    """))
    done = run_neuro(ask_args(tiny_bitnet_tq2), home, failing)
    line = error_line(done)
    assert "llama-cli failed (exit 1): error: unable to load model (unknown tensor type 36)." in line
    assert ADVICE in line
    assert done.stdout == ""


def test_troubleshooting_is_one_line() -> None:
    assert "\n" not in TROUBLESHOOTING


# ----------------------------------------------------------------------------- search order
def test_candidate_search_order(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = '#!/bin/sh\necho "llama-cli stand-in"\n'
    share = executable(home / ".local/share/bitnet.cpp/build/bin/llama-cli", script)
    assert find_llama_cli(load_settings()) == share

    local_bin = executable(home / ".local/bin/llama-cli-bitnet", script)
    assert find_llama_cli(load_settings()) == local_bin

    path_dir = tmp_path / "bin"
    on_path = executable(path_dir / "llama-cli-bitnet", script)
    monkeypatch.setenv("PATH", f"{path_dir}{os.pathsep}{os.environ['PATH']}")
    assert find_llama_cli(load_settings()) == on_path

    explicit = executable(tmp_path / "explicit" / "llama-cli", script)
    monkeypatch.setenv("BITNET_CLI_PATH", str(explicit))
    settings = load_settings()
    assert find_llama_cli(settings) == explicit
    assert candidate_paths(settings) == [explicit, on_path, local_bin, share]

    # A candidate that is not executable is passed over.
    monkeypatch.delenv("BITNET_CLI_PATH")
    on_path.chmod(0o644)
    assert find_llama_cli(load_settings()) == local_bin


def test_ask_finds_llama_cli_bitnet_in_home(llama_cli: Path, tiny_bitnet_tq2: Path, home: Path) -> None:
    """No BITNET_CLI_PATH: `neuro ask` runs ~/.local/bin/llama-cli-bitnet."""
    wrapper(home / ".local/bin/llama-cli-bitnet", llama_cli)
    done = run_neuro(ask_args(tiny_bitnet_tq2, max_tokens=8), home)
    assert done.returncode == 0, done.stderr
    assert done.stdout == run_by_hand(llama_cli, tiny_bitnet_tq2, 8)[:-2] + "\n"


# ----------------------------------------------------------------------------- options
def test_stop_string_ends_the_answer(llama_cli: Path, tiny_bitnet_tq2: Path, home: Path) -> None:
    backend = SubprocessBackend(tiny_bitnet_tq2, settings=load_settings(bitnet_cli_path=llama_cli),
                                threads=1, ctx_size=512)
    messages = [{"role": "user", "content": QUESTION}]
    full = "".join(backend.chat(messages, GenerationOptions(max_tokens=16, temperature=0)))
    stop = full[len(full) // 2: len(full) // 2 + 3]
    assert len(stop) == 3
    answer = backend.chat(messages, GenerationOptions(max_tokens=16, temperature=0, stop=(stop,)))
    cut = "".join(answer)
    assert cut == full[: full.index(stop)]
    assert answer.result.finish_reason == "stop"


def test_cancel_stops_llama_cli(tiny_bitnet_tq2: Path, tmp_path: Path, home: Path) -> None:
    slow = executable(tmp_path / "slow-llama-cli", textwrap.dedent(f"""\
        #!{sys.executable}
        import sys, time
        if sys.argv[1:] == ["--help"]:
            sys.exit(0)
        sys.stdout.write("First words")
        sys.stdout.flush()
        time.sleep(60)
        sys.stdout.write(" and more")
    """))
    backend = SubprocessBackend(tiny_bitnet_tq2, settings=load_settings(bitnet_cli_path=slow), threads=1, ctx_size=512)
    pieces = backend.chat([{"role": "user", "content": QUESTION}], GenerationOptions(max_tokens=8))
    assert next(pieces) == "First words"
    backend.cancel()
    assert "".join(pieces) == ""  # ends without an error
    assert pieces.result.finish_reason == "cancelled"


def test_long_prompt_goes_in_a_file(tiny_bitnet_tq2: Path, tmp_path: Path, home: Path) -> None:
    """A prompt over Linux's 128 KiB argument limit is passed with -f, byte for byte."""
    seen = tmp_path / "seen.txt"
    reader = executable(tmp_path / "llama-cli", textwrap.dedent(f"""\
        #!{sys.executable}
        import sys
        args = sys.argv[1:]
        if args == ["--help"]:
            print("-f FNAME --no-display-prompt")
            sys.exit(0)
        text = open(args[args.index("-f") + 1], encoding="utf-8").read()
        if text.endswith("\\n"):
            text = text[:-1]  # as llama-cli does
        open({str(seen)!r}, "w", encoding="utf-8").write(text)
        print("read", len(text), "characters")
    """))
    settings = load_settings(bitnet_cli_path=reader)
    backend = SubprocessBackend(tiny_bitnet_tq2, settings=settings, threads=1, ctx_size=512)
    question = "Summarise this:\n" + "ternary weights are small. " * 6000 + "\n"
    messages = [{"role": "user", "content": question}]
    answer = "".join(backend.chat(messages, GenerationOptions(max_tokens=8)))
    prompt = backend.render_prompt(messages)
    assert len(prompt.encode()) > 128 * 1024
    assert seen.read_text(encoding="utf-8") == prompt
    assert answer == f"read {len(prompt)} characters\n"


def test_silent_binary_is_an_error(tiny_bitnet_tq2: Path, tmp_path: Path, home: Path) -> None:
    """A program that exits 0 without printing anything did not answer (e.g. its output was lost)."""
    silent = executable(tmp_path / "llama-cli", '#!/bin/sh\necho "generate: n_ctx = 512" >&2\nexit 0\n')
    done = run_neuro(ask_args(tiny_bitnet_tq2), home, silent)
    line = error_line(done)
    assert "llama-cli exited without printing an answer: generate: n_ctx = 512." in line and ADVICE in line
