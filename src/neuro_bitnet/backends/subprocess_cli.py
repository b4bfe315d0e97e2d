"""The subprocess backend: drives an external `llama-cli` (Microsoft's bitnet.cpp) per answer.

Each answer is one run of the program with the chat prompt as `-p`; its standard output is
streamed back without the echoed prompt and the end markers, and its performance report on
standard error gives the token counts and timings.
"""

from __future__ import annotations

import codecs
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from neuro_bitnet.config import Settings
from neuro_bitnet.engine.options import GenerationOptions
from neuro_bitnet.engine.stats import AnswerResult, Generation
from neuro_bitnet.engine.stop_strings import StopStringFilter
from neuro_bitnet.errors import ConfigError, EngineError

TROUBLESHOOTING = (
    "To use the subprocess backend, build Microsoft's bitnet.cpp (github.com/microsoft/BitNet: "
    "`python setup_env.py -md <model dir> -q i2_s`, which needs clang >= 18 and cmake) and point "
    "BITNET_CLI_PATH at its build/bin/llama-cli, or install it as `llama-cli-bitnet` on PATH. "
    "Or use the built-in engine: --backend native."
)
# What llama-cli prints on stdout after the answer: a marker when the model ends its turn
# (" [end of text]"; "> EOF by user" in interactive builds), then a blank line.
_END_MARKERS = [" [end of text]", "\n> EOF by user"]
_CLOSING = "\n\n"
_PROMPT_TIMING = re.compile(r"prompt eval time\s*=\s*([\d.]+) ms\s*/\s*(\d+) tokens")
_EVAL_TIMING = re.compile(r"(?<!prompt )\beval time\s*=\s*([\d.]+) ms\s*/\s*(\d+) (?:runs|tokens)")
_LOAD_TIMING = re.compile(r"\bload time\s*=\s*([\d.]+) ms")
_HELP_TIMEOUT = 30.0
_MAX_PROMPT_ARG = 100_000  # bytes; longer prompts are passed in a file (-f)


class CliNotFoundError(EngineError):
    """No usable llama-cli program was found."""


class CliFailedError(EngineError):
    """llama-cli ran but failed."""


def candidate_paths(settings: Settings) -> list[Path]:
    """Where to look for llama-cli, in order: BITNET_CLI_PATH, `llama-cli-bitnet` on PATH,
    ~/.local/bin/llama-cli-bitnet, ~/.local/share/bitnet.cpp/build/bin/llama-cli."""
    found = []
    if settings.bitnet_cli_path:
        found.append(Path(settings.bitnet_cli_path))
    on_path = shutil.which("llama-cli-bitnet")
    if on_path:
        found.append(Path(on_path))
    home = Path.home()
    found += [home / ".local/bin/llama-cli-bitnet", home / ".local/share/bitnet.cpp/build/bin/llama-cli"]
    return found


def find_llama_cli(settings: Settings) -> Path:
    """The first executable llama-cli among the candidates, or a clear error with advice.

    An explicit BITNET_CLI_PATH must be usable: it is never silently skipped.
    """
    explicit = settings.bitnet_cli_path
    if explicit:
        explicit = Path(explicit)
        if not explicit.exists():
            raise CliNotFoundError(f"BITNET_CLI_PATH points at {explicit}, which does not exist. {TROUBLESHOOTING}")
        if not _is_executable(explicit):
            raise CliNotFoundError(
                f"BITNET_CLI_PATH points at {explicit}, which is not an executable file. {TROUBLESHOOTING}"
            )
        return explicit
    for path in candidate_paths(settings):
        if _is_executable(path):
            return path
    raise CliNotFoundError(f"llama-cli (bitnet.cpp) was not found. {TROUBLESHOOTING}")


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


@lru_cache(maxsize=8)
def _supported_flags(cli: str, mtime_ns: int) -> frozenset[str]:
    """Flags this llama-cli build knows, read once (per file version) from its --help."""
    try:
        out = subprocess.run([cli, "--help"], capture_output=True, text=True, errors="replace",
                             stdin=subprocess.DEVNULL, timeout=_HELP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(re.findall(r"(?<![\w-])(-{1,2}[a-zA-Z][\w-]*)", out.stdout + out.stderr))


def supported_flags(cli: Path) -> frozenset[str]:
    """Flags the program at ``cli`` lists in its --help (empty if it has no usable help)."""
    try:
        mtime = cli.stat().st_mtime_ns
    except OSError:
        mtime = 0
    return _supported_flags(str(cli), mtime)


class SubprocessBackend:
    """Runs each answer as one `llama-cli` process and streams its standard output."""

    name = "subprocess"

    def __init__(self, model_path: Path, *, settings: Settings, threads: int | None, ctx_size: int,
                 model_name: str | None = None) -> None:
        from neuro_bitnet.engine.chat_format import ChatFormatError, ChatPrompter
        from neuro_bitnet.engine.gguf import GGUFFile
        from neuro_bitnet.engine.threads import physical_cores
        from neuro_bitnet.engine.tokenizer import Tokenizer

        self.cli = find_llama_cli(settings)
        self.model_path = Path(model_path)
        self.threads = threads or physical_cores()
        self.ctx_size = ctx_size
        with GGUFFile(self.model_path) as gguf:  # metadata only: the chat template and tokenizer
            meta = dict(gguf.metadata)
        self.model_name = model_name or meta.get("general.name") or self.model_path.stem
        self._tokenizer = Tokenizer.from_gguf_metadata(meta)
        try:
            self._chat_prompt = ChatPrompter(self._tokenizer, meta.get("tokenizer.chat_template"))
        except ChatFormatError as exc:
            raise EngineError(f"{self.model_path.name}: {exc}") from None
        self._process: subprocess.Popen | None = None
        self._cancelled = False

    # -- prompt ---------------------------------------------------------------------------------
    def render_prompt(self, messages: list[dict[str, str]]) -> str:
        """The chat prompt as text (the engine's one chat rule), without the BOS token
        (llama-cli adds it)."""
        return self._chat_prompt.text_without_bos(messages)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_bos=False))

    def prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(self._chat_prompt.ids(messages))

    def command(self, prompt: str, options: GenerationOptions, prompt_file: Path | None = None) -> list[str]:
        """The llama-cli command line for one answer (the prompt read from ``prompt_file`` if given)."""
        flags = supported_flags(self.cli)
        source = ["-f", str(prompt_file)] if prompt_file is not None else ["-p", prompt]
        cmd = [str(self.cli), "-m", str(self.model_path), *source, "-n", str(options.max_tokens),
               "-t", str(self.threads), "-c", str(self.ctx_size), "--temp", str(options.temperature),
               "--top-k", str(options.top_k), "--top-p", str(options.top_p),
               "--repeat-penalty", str(options.repeat_penalty)]
        if "--min-p" in flags:
            cmd += ["--min-p", str(options.min_p)]
        if options.seed is not None:
            cmd += ["--seed", str(options.seed)]
        if "--no-display-prompt" in flags:
            cmd.append("--no-display-prompt")
        if "-no-cnv" in flags:
            cmd.append("-no-cnv")  # with a chat template in the file, newer builds start a chat
        if "--no-warmup" in flags:
            cmd.append("--no-warmup")
        return cmd

    def _echoed_prompt(self, prompt: str) -> str:
        """What a build without --no-display-prompt prints first: the prompt's tokens as text,
        special tokens (BOS, <|eot_id|>) printed as nothing."""
        if "--no-display-prompt" in supported_flags(self.cli):
            return ""
        tok = self._tokenizer
        return tok.decode(tok.encode(prompt, add_bos=True), skip_special=True)

    # -- generation -----------------------------------------------------------------------------
    def chat(self, messages: list[dict[str, str]], options: GenerationOptions) -> Generation:
        if options.json_schema is not None:
            raise ConfigError("JSON schema output (--json-schema, --json-object) needs the native or daemon backend")
        prompt = self.render_prompt(messages)
        result = AnswerResult()
        return Generation(self._run(prompt, options, result), result)

    def _start(self, prompt: str, options: GenerationOptions, workdir: Path) -> subprocess.Popen:
        prompt_file = None
        if len(prompt.encode("utf-8")) > _MAX_PROMPT_ARG:
            # Linux refuses a single argument over 128 KiB: such a prompt goes in a file. llama-cli
            # drops one trailing newline from a prompt file, so one is added.
            prompt_file = workdir / "prompt.txt"
            prompt_file.write_text(prompt + "\n", encoding="utf-8")
        try:
            return subprocess.Popen(self.command(prompt, options, prompt_file), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise CliNotFoundError(f"cannot run {self.cli}: {exc.strerror or exc}. {TROUBLESHOOTING}") from None

    def _run(self, prompt: str, options: GenerationOptions, result: AnswerResult) -> Iterator[str]:
        start = time.perf_counter()
        self._cancelled = False
        with tempfile.TemporaryDirectory(prefix="neuro-llama-cli-") as workdir:
            proc = self._start(prompt, options, Path(workdir))
            self._process = proc
            stderr_chunks: list[bytes] = []
            reader = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)
            reader.start()
            output = _OutputCleaner(self._echoed_prompt(prompt))
            stops = StopStringFilter(list(options.stop))
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            eof = stopped = printed = False
            try:
                while not (eof or stopped):
                    chunk = os.read(proc.stdout.fileno(), 4096)
                    eof = not chunk
                    printed = printed or not eof
                    text = output.push(decoder.decode(chunk, final=eof))
                    if eof:
                        text += output.flush()
                    text, stopped = stops.push(text)
                    if eof and not stopped:
                        text += stops.flush()
                    if text:
                        yield text
            finally:
                # At end of output llama-cli is exiting by itself; otherwise (a stop string, the
                # caller closed us, an error) it is stopped.
                self._stop(proc, wait_first=eof)
                reader.join(timeout=5)
                proc.stdout.close()
                proc.stderr.close()
                self._process = None
        err = b"".join(stderr_chunks).decode("utf-8", "replace")
        cancelled, self._cancelled = self._cancelled, False
        if proc.returncode != 0 and not (stopped or cancelled):
            raise CliFailedError(
                f"{self.cli.name} failed (exit {proc.returncode}): {_last_line(err)}. {TROUBLESHOOTING}"
            )
        if not printed and not cancelled:  # even an empty answer ends with a marker or a blank line
            raise CliFailedError(f"{self.cli.name} exited without printing an answer: {_last_line(err)}. "
                                 f"{TROUBLESHOOTING}")
        reason = "cancelled" if cancelled else "stop" if output.ended or stopped else "length"
        _parse_stats(result, err, total=time.perf_counter() - start, finish_reason=reason)

    @staticmethod
    def _stop(proc: subprocess.Popen, wait_first: bool) -> None:
        if wait_first:
            try:
                proc.wait(timeout=10)
                return
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def cancel(self) -> None:
        proc = self._process
        if proc is not None and proc.poll() is None:
            self._cancelled = True
            proc.terminate()

    def close(self) -> None:
        self.cancel()


class _OutputCleaner:
    """Removes the echoed prompt (builds without --no-display-prompt), the end-of-text marker
    and the closing blank line from llama-cli's standard output."""

    def __init__(self, echoed_prompt: str) -> None:
        self.skip = echoed_prompt
        self.head = ""
        self.markers = StopStringFilter(_END_MARKERS)
        self.held = ""  # a possible closing blank line, shown only if more text follows
        self.ended = False  # the model ended its turn (the marker was seen)

    def push(self, text: str) -> str:
        if self.skip:
            self.head += text
            if len(self.head) < len(self.skip) and self.skip.startswith(self.head):
                return ""
            text = self.head[len(self.skip):] if self.head.startswith(self.skip) else self.head
            self.skip = self.head = ""
        out, self.ended = self.markers.push(text) if not self.ended else ("", True)
        return self._hold_closing(out)

    def _hold_closing(self, text: str) -> str:
        text = self.held + text
        keep = len(text) - len(text.rstrip("\n"))
        keep = min(keep, len(_CLOSING))
        self.held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """The rest, at the end of the output, without llama-cli's closing blank line."""
        if self.skip:  # the output stopped inside the echoed prompt: no answer
            return ""
        if self.ended:  # newlines the model wrote before its end marker
            text, self.held = self.held, ""
            return text
        text = self.held + self.markers.flush()
        self.held = ""
        return text[: -len(_CLOSING)] if text.endswith(_CLOSING) else text


def _last_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"


def _parse_stats(stats: AnswerResult, stderr: str, total: float, finish_reason: str) -> None:
    """Fill ``stats`` with the token counts and times of llama-cli's performance report on stderr."""
    stats.finish_reason = finish_reason
    stats.extra["total_seconds"] = total
    if m := _PROMPT_TIMING.search(stderr):
        stats.prefill_seconds, stats.prompt_tokens = float(m.group(1)) / 1000, int(m.group(2))
    evals = list(_EVAL_TIMING.finditer(stderr))
    if evals:
        stats.decode_seconds, stats.generated_tokens = float(evals[-1].group(1)) / 1000, int(evals[-1].group(2))
        stats.generated_tokens += 1  # the first token comes from the prompt's evaluation
    if m := _LOAD_TIMING.search(stderr):
        stats.load_seconds = float(m.group(1)) / 1000
