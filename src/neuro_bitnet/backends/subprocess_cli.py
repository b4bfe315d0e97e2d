"""The subprocess backend: drives an external `llama-cli` (Microsoft's bitnet.cpp) per answer."""

from __future__ import annotations

import codecs
import os
import re
import shutil
import subprocess
import time
from functools import lru_cache
from pathlib import Path
from typing import Generator

from neuro_bitnet.backends.base import AnswerStats, GenerationOptions
from neuro_bitnet.config import Settings
from neuro_bitnet.errors import NeuroError

TROUBLESHOOTING = (
    "To use the subprocess backend, build Microsoft's bitnet.cpp (github.com/microsoft/BitNet: "
    "`python setup_env.py -md <model dir> -q i2_s`, which needs clang >= 18 and cmake) and point "
    "BITNET_CLI_PATH at its build/bin/llama-cli, or install it as `llama-cli-bitnet` on PATH. "
    "Or use the built-in engine: --backend native."
)
# Markers llama-cli prints on stdout around the generated text.
_TRAILERS = (" [end of text]", "[end of text]", "\n> EOF by user", "> EOF by user")
_PROMPT_TIMING = re.compile(r"prompt eval time\s*=\s*([\d.]+) ms\s*/\s*(\d+) tokens")
_EVAL_TIMING = re.compile(r"\beval time\s*=\s*([\d.]+) ms\s*/\s*(\d+) (?:runs|tokens)")
_LOAD_TIMING = re.compile(r"load time\s*=\s*([\d.]+) ms")


class CliNotFoundError(NeuroError):
    exit_code = 6


def candidate_paths(settings: Settings) -> list[Path]:
    """Where to look for llama-cli, in order."""
    found = []
    if settings.bitnet_cli_path:
        found.append(settings.bitnet_cli_path)
    on_path = shutil.which("llama-cli-bitnet")
    if on_path:
        found.append(Path(on_path))
    home = Path.home()
    found += [home / ".local/bin/llama-cli-bitnet", home / ".local/share/bitnet.cpp/build/bin/llama-cli"]
    return found


def find_llama_cli(settings: Settings) -> Path:
    """The first executable llama-cli among the candidates, or a clear error with advice."""
    if settings.bitnet_cli_path and not _is_executable(settings.bitnet_cli_path):
        raise CliNotFoundError(
            f"BITNET_CLI_PATH points at {settings.bitnet_cli_path}, which is not an executable file. "
            + TROUBLESHOOTING
        )
    for path in candidate_paths(settings):
        if _is_executable(path):
            return path
    raise CliNotFoundError("llama-cli (bitnet.cpp) was not found. " + TROUBLESHOOTING)


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


@lru_cache(maxsize=8)
def _supported_flags(cli: str) -> frozenset[str]:
    """Flags this llama-cli build knows, read once from its --help."""
    try:
        out = subprocess.run([cli, "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(re.findall(r"(?<![\w-])(-{1,2}[a-zA-Z][\w-]*)", out.stdout + out.stderr))


class SubprocessBackend:
    """Runs each answer as one `llama-cli` process and streams its standard output."""

    name = "subprocess"

    def __init__(self, model_path: Path, *, settings: Settings, threads: int | None, ctx_size: int,
                 model_name: str | None = None) -> None:
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
        self._chat_template = meta.get("tokenizer.chat_template")
        self._tokenizer = Tokenizer.from_gguf_metadata(meta)
        self._process: subprocess.Popen | None = None
        self._stats = AnswerStats()

    # -- prompt ---------------------------------------------------------------------------------
    def render_prompt(self, messages: list[dict[str, str]]) -> str:
        """The chat prompt as text, without the BOS token (llama-cli adds it)."""
        from neuro_bitnet.engine.chat_format import render_chat

        tok = self._tokenizer
        bos = tok.decode([tok.bos_id]) if tok.bos_id is not None else ""
        eos = tok.decode([tok.eos_id]) if tok.eos_id is not None else ""
        text = render_chat(messages, template=self._chat_template, bos_token=bos, eos_token=eos)
        return text[len(bos):] if bos and text.startswith(bos) else text

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_bos=False))

    def prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(self._tokenizer.encode(self.render_prompt(messages), add_bos=True))

    def command(self, prompt: str, options: GenerationOptions) -> list[str]:
        """The llama-cli command line for one answer."""
        flags = _supported_flags(str(self.cli))
        cmd = [str(self.cli), "-m", str(self.model_path), "-p", prompt, "-n", str(options.max_tokens),
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
            cmd.append("-no-cnv")  # newer builds would otherwise start an interactive chat
        if "--no-warmup" in flags:
            cmd.append("--no-warmup")
        return cmd

    # -- generation -----------------------------------------------------------------------------
    def chat(self, messages: list[dict[str, str]], options: GenerationOptions) -> Generator[str, None, None]:
        prompt = self.render_prompt(messages)
        return self._run(prompt, options)

    def _run(self, prompt: str, options: GenerationOptions) -> Generator[str, None, None]:
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(self.command(prompt, options), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise CliNotFoundError(f"cannot run {self.cli}: {exc}. " + TROUBLESHOOTING) from None
        self._process = proc
        stderr_chunks: list[bytes] = []
        import threading

        reader = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)
        reader.start()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        cleaner = _OutputCleaner(prompt if "--no-display-prompt" not in _supported_flags(str(self.cli)) else "")
        stops = list(options.stop)
        produced = ""
        try:
            while True:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                text = cleaner.push(decoder.decode(chunk))
                if text:
                    produced += text
                    hit = min((produced.find(s) for s in stops if s in produced), default=-1)
                    if hit >= 0:
                        yield text[: max(0, len(text) - (len(produced) - hit))]
                        break
                    yield text
            tail = cleaner.flush(decoder.decode(b"", final=True))
            if tail:
                yield tail
        finally:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            reader.join(timeout=5)
            self._process = None
        err = b"".join(stderr_chunks).decode("utf-8", "replace")
        if proc.returncode not in (0, -15) and not produced:
            last = "\n".join(line for line in err.strip().splitlines()[-5:])
            raise NeuroError(f"llama-cli failed (exit {proc.returncode}):\n{last}\n{TROUBLESHOOTING}")
        self._stats = _parse_stats(err, total=time.perf_counter() - start)

    def cancel(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()

    @property
    def last_stats(self) -> AnswerStats:
        return self._stats

    def close(self) -> None:
        self.cancel()


class _OutputCleaner:
    """Removes the echoed prompt (old builds) and the end-of-text markers from llama-cli output."""

    def __init__(self, echoed_prompt: str) -> None:
        self.skip = echoed_prompt
        self.held = ""

    def push(self, text: str) -> str:
        self.held += text
        if self.skip:
            if len(self.held) < len(self.skip) and self.skip.startswith(self.held):
                return ""
            if self.held.startswith(self.skip):
                self.held = self.held[len(self.skip):]
            self.skip = ""
        # Hold back a tail that could be the start of an end marker.
        keep = max(len(m) for m in _TRAILERS)
        out, self.held = self.held[:-keep], self.held[-keep:]
        return out

    def flush(self, text: str = "") -> str:
        rest = self.held + text
        self.held = ""
        for marker in _TRAILERS:
            idx = rest.find(marker)
            if idx >= 0:
                rest = rest[:idx]
        return rest


def _parse_stats(stderr: str, total: float) -> AnswerStats:
    """Token counts and times from llama-cli's performance report on stderr."""
    stats = AnswerStats(finish_reason="stop", extra={"total_seconds": total})
    if m := _PROMPT_TIMING.search(stderr):
        stats.prefill_seconds, stats.prompt_tokens = float(m.group(1)) / 1000, int(m.group(2))
    evals = [m for m in _EVAL_TIMING.finditer(stderr) if "prompt" not in stderr[max(0, m.start() - 8):m.start()]]
    if evals:
        stats.decode_seconds, stats.generated_tokens = float(evals[-1].group(1)) / 1000, int(evals[-1].group(2))
        stats.generated_tokens += 1  # the first token comes from the prompt's evaluation
    if m := _LOAD_TIMING.search(stderr):
        stats.load_seconds = float(m.group(1)) / 1000
    return stats
