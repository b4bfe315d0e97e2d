"""`BitNetModel`: a loaded model with tokenizer, KV cache, sampling and streaming generation."""

from __future__ import annotations

import os
import threading
import time
import weakref
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from neuro_bitnet.config import DEFAULT_ISA, DEFAULT_KV_CACHE, KV_CACHE_CHOICES
from neuro_bitnet.engine import _core, heads
from neuro_bitnet.engine.architecture import HParams
from neuro_bitnet.engine.chat_format import ChatFormatError, ChatPrompter
from neuro_bitnet.engine.constrained import Grammar, GrammarConstraint
from neuro_bitnet.engine.decoding import NON_FINITE, Decoding, check_prompt_fits
from neuro_bitnet.engine.gguf import GGUFFile
from neuro_bitnet.engine.heads import DEFAULT_HEAD, HEADS
from neuro_bitnet.engine.options import DEFAULT_MAX_TOKENS, DEFAULT_SAMPLING
from neuro_bitnet.engine.parallel import check_parallel, default_parallel
from neuro_bitnet.engine.sampling import Sampler, SamplingParams
from neuro_bitnet.engine.stats import AnswerResult, Generation
from neuro_bitnet.engine.tokenizer import Tokenizer
from neuro_bitnet.engine.weights import build_core_spec
from neuro_bitnet.errors import EngineError

PREFILL_CHUNK = 256  # tokens evaluated per core call while reading a prompt
MAX_PARALLEL = 256  # KV slots the core accepts (NB_MAX_SEQ)


class BitNetModel:
    """A BitNet model ready to run. Create it with :func:`neuro_bitnet.engine.load_model`."""

    def __init__(
        self, path: str | Path, *, threads: int, ctx_size: int, head: str = DEFAULT_HEAD, isa: str = DEFAULT_ISA,
        parallel: int | None = 1, kv_cache: str = DEFAULT_KV_CACHE,
    ) -> None:
        start = time.perf_counter()
        self.path = Path(path)
        self._gguf = GGUFFile(self.path)
        meta = self._gguf.metadata
        tokens = meta.get("tokenizer.ggml.tokens")
        n_tokens = len(tokens) if isinstance(tokens, list) and tokens else None
        self.hparams = HParams.from_metadata(meta, n_vocab_fallback=n_tokens)
        self.tokenizer = Tokenizer.from_gguf_metadata(meta)
        self.chat_template: str | None = meta.get("tokenizer.chat_template")
        try:
            self.chat_prompt = ChatPrompter(self.tokenizer, self.chat_template)
        except ChatFormatError as exc:
            raise EngineError(f"{self.path.name}: {exc}") from None
        name = meta.get("general.name")
        self.name: str = name if isinstance(name, str) and name else self.path.stem
        if ctx_size < 8:
            raise EngineError(f"ctx_size {ctx_size} is too small")
        if head not in HEADS:
            raise EngineError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
        if kv_cache not in KV_CACHE_CHOICES:
            raise EngineError(f"kv_cache must be one of {', '.join(KV_CACHE_CHOICES)}, not {kv_cache!r}")
        if parallel is None:
            parallel = default_parallel(self.hparams, ctx_size)
        elif not 1 <= parallel <= MAX_PARALLEL:
            raise EngineError(f"parallel must be in 1..{MAX_PARALLEL}, not {parallel}")
        else:
            check_parallel(self.hparams, ctx_size, parallel)  # the memory rule of the default
        self.ctx_size = ctx_size  # per KV slot
        self.parallel = parallel  # KV slots: sequences a BatchScheduler runs together (slot 0: generate)
        self.threads = threads
        self.head = head
        self.kv_cache = kv_cache  # the KV cache's element type
        spec = build_core_spec(self._gguf, self.hparams, ctx_size=ctx_size, threads=threads, head=head)
        spec["n_seq"] = parallel
        spec["kv_cache"] = kv_cache
        self._head_fd: weakref.finalize | None = None
        self._head_name = "output.weight" if "output" in spec else "token_embd.weight"
        if head != "exact" and isinstance(spec.get("output", spec["tok_embd"]), memoryview):
            self._let_core_drop_head_pages(spec)
        cached_head = heads.load_head(self.path, head, self.hparams.n_vocab, self.hparams.n_embd)
        if cached_head is not None:
            spec["head_codes"], spec["head_scales"] = cached_head
        try:
            self._core = _core.Model(spec, isa=isa)
        except (ValueError, TypeError, MemoryError) as exc:
            self._close_head_fd()
            raise EngineError(f"{self.path.name}: {exc}") from None
        if cached_head is None and head != "exact":  # built now: keep it for the next load
            copy = self._core.head_copy()
            if copy is not None:
                heads.store_head(self.path, head, self.hparams.n_vocab, self.hparams.n_embd, *copy)
        del spec, cached_head  # the core holds its own views of what it uses
        self._cached: list[int] = []  # tokens whose keys/values are in KV slot 0 (generate's slot)
        self._busy = threading.Lock()
        self._cancel = threading.Event()
        self.load_seconds = time.perf_counter() - start

    # -- tokens -------------------------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        return self.hparams.n_vocab

    @property
    def isa(self) -> str:
        """The kernel family in use ("amx", "avx512vnni", "avx2" or "portable")."""
        return self._core.isa

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids of ``text``; special tokens such as ``<|eot_id|>`` are recognised."""
        return self.tokenizer.encode(text, add_bos=add_bos)

    def detokenize(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` (special tokens included as text)."""
        return self.tokenizer.decode(list(ids))

    # -- evaluation ---------------------------------------------------------------------------
    def _check_ids(self, ids: Sequence[int]) -> None:
        """Ids the model can evaluate: some, each in the vocabulary, at most one per position
        (a generation's prompt must also leave one for the answer: ``check_prompt_fits``)."""
        if not ids:
            raise EngineError("empty prompt: nothing to evaluate")
        if len(ids) > self.ctx_size:
            raise EngineError(
                f"prompt has {len(ids)} tokens but the context holds {self.ctx_size}; "
                "shorten it or raise --ctx-size"
            )
        bad = [t for t in ids if not 0 <= t < self.n_vocab]
        if bad:
            raise EngineError(f"token id {bad[0]} is outside the vocabulary (0..{self.n_vocab - 1})")

    def _forward(self, ids: Sequence[int], n_past: int, out: np.ndarray, all_logits: bool,
                 exact_head: bool = False) -> None:
        tokens = np.asarray(ids, dtype=np.int32)
        try:
            self._core.forward(tokens, n_past, out, all_logits, exact_head)
        except ValueError as exc:
            raise EngineError(str(exc)) from None

    def logits(self, ids: Sequence[int], *, exact: bool = True) -> np.ndarray:
        """Logits for every position of ``ids`` in a fresh context: float32 (len(ids), vocab).

        A scoring call (perplexity, evaluation, ranking): by default every logit is computed
        from the file's float head, whatever head generation uses, with keys and values kept
        in f32, whatever the KV cache type. ``exact=False`` takes the model's head (with
        "q4"/"q8" only the 128 best logits per position are exact) and KV cache type.
        """
        ids = [int(t) for t in ids]
        self._check_ids(ids)
        exact = exact and (self.head != "exact" or self.kv_cache != "f32")  # else exact already
        with self._exclusive():
            out = np.empty((len(ids), self.n_vocab), dtype=np.float32)
            self._cached = []
            try:
                for lo in range(0, len(ids), PREFILL_CHUNK):
                    chunk = ids[lo : lo + PREFILL_CHUNK]
                    self._forward(chunk, lo, out[lo : lo + len(chunk)], True, exact)
                    # f32 positions in an f16 cache: generation must not reuse them
                    self._cached = [] if exact and self.kv_cache != "f32" else ids[: lo + len(chunk)]
            finally:
                if exact and self._head_fd is not None:  # the float head's pages were dropped
                    self._gguf.drop_pages(self._head_name)  # after the head build: again
            _check_finite(out)
            return out

    def _prefill(self, ids: list[int]) -> tuple[np.ndarray, int]:
        """Evaluate a prompt, reusing the cached prefix; returns last logits and reused count."""
        reuse = reusable_prefix(self._cached, ids)
        self._cached = self._cached[:reuse]
        last = np.empty(self.n_vocab, dtype=np.float32)
        for lo in range(reuse, len(ids), PREFILL_CHUNK):
            chunk = ids[lo : lo + PREFILL_CHUNK]
            self._forward(chunk, lo, last, False)
            self._cached = ids[: lo + len(chunk)]
        return last, reuse

    def reset(self) -> None:
        """Forget the KV cache: the next call evaluates its whole prompt."""
        with self._exclusive():
            self._cached = []

    def _exclusive(self):
        if not self._busy.acquire(blocking=False):
            raise EngineError("the model is already generating in another thread")
        return _Release(self._busy)

    # -- generation ---------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the running generation to stop before its next token."""
        self._cancel.set()

    def prompt_ids(self, prompt_or_ids: str | Sequence[int], max_tokens: int) -> list[int]:
        """A generation's prompt as checked token ids (text is tokenized with BOS)."""
        if isinstance(prompt_or_ids, str):
            ids = self.tokenize(prompt_or_ids, add_bos=True)
        else:
            ids = [int(t) for t in prompt_or_ids]
        check_prompt_fits(len(ids), self.ctx_size)
        self._check_ids(ids)
        if max_tokens < 0:
            raise EngineError("max_tokens must be >= 0")
        return ids

    def generate(
        self,
        prompt_or_ids: str | Sequence[int],
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float = DEFAULT_SAMPLING.temperature,
        top_k: int = DEFAULT_SAMPLING.top_k,
        top_p: float = DEFAULT_SAMPLING.top_p,
        min_p: float = DEFAULT_SAMPLING.min_p,
        repeat_penalty: float = DEFAULT_SAMPLING.repeat_penalty,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        json_schema: dict | bool | str | None = None,
        grammar: Grammar | None = None,
    ) -> Generation:
        """Stream the continuation of a prompt (text is tokenized with BOS) as text pieces; the
        returned :class:`Generation`'s ``result`` holds the answer's counts and timings.

        ``json_schema`` (a JSON schema dict, or ``{"type": "object"}`` for any JSON object) or a
        compiled ``grammar`` constrains the output: tokens that would break it are never chosen,
        and generation ends when it is complete (see ``engine.constrained``). An invalid or
        unsupported schema raises ``GrammarError`` before anything runs.
        """
        params = SamplingParams(temperature, top_k, top_p, min_p, repeat_penalty, seed=seed)
        decoding = self.decoding(prompt_or_ids, max_tokens, params, stop, json_schema, grammar)
        return Generation(self._generate(decoding), decoding.result)

    def decoding(self, prompt_or_ids: str | Sequence[int], max_tokens: int, params: SamplingParams,
                 stop: str | Sequence[str] | None = None, json_schema: dict | bool | str | None = None,
                 grammar: Grammar | None = None) -> Decoding:
        """A generation's checked prompt and token rules (see ``engine.decoding``): what
        ``generate`` and ``BatchScheduler.submit`` run. Errors as ``generate``'s."""
        ids = self.prompt_ids(prompt_or_ids, max_tokens)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if json_schema is not None and grammar is not None:
            raise EngineError("give json_schema or grammar, not both")
        if json_schema is not None:
            grammar = Grammar.json_schema(json_schema)
        constraint = GrammarConstraint(grammar, self.tokenizer, self.n_vocab) if grammar is not None else None
        result = AnswerResult(load_seconds=self.load_seconds, prompt_tokens=len(ids))
        return Decoding(ids, max_tokens=max_tokens, ctx_size=self.ctx_size, sampler=Sampler(params), stops=stops,
                        tokenizer=self.tokenizer, result=result, constraint=constraint,
                        remember=self.chat_prompt.remember)

    def _generate(self, decoding: Decoding) -> Iterator[str]:
        if decoding.done:  # max_tokens 0: nothing to run, as in a BatchScheduler
            decoding.finish()
            return
        stats = decoding.result
        with self._exclusive():
            self._cancel.clear()
            start = time.perf_counter()
            logits, stats.cached_tokens = self._prefill(decoding.prompt_ids)
            stats.prefill_seconds = time.perf_counter() - start
            decode_start = time.perf_counter()
            while not decoding.done:
                if self._cancel.is_set():
                    break  # finish() below ends it as "cancelled"
                piece = decoding.push(logits)
                if piece:
                    yield piece
                if decoding.done:
                    break
                history = decoding.history
                self._forward([history[-1]], len(history) - 1, logits, False)
                self._cached = history[:]
            stats.decode_seconds = time.perf_counter() - decode_start
            tail = decoding.finish()
            if tail:
                yield tail

    def chat(self, messages: list[dict[str, str]], **kwargs) -> Generation:
        """Stream the assistant's reply to ``messages`` ([{"role": ..., "content": ...}])."""
        return self.generate(self.chat_prompt_ids(messages), **kwargs)

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The prompt text for ``messages`` in this file's chat format (see ``chat_format``)."""
        try:
            return self.chat_prompt.text(messages)
        except ChatFormatError as exc:
            raise EngineError(str(exc)) from None

    def chat_prompt_ids(self, messages: list[dict[str, str]], *,
                        cancelled: Callable[[], bool] | None = None) -> list[int]:
        """Token ids of the chat prompt for ``messages``, BOS once. ``cancelled()`` returning
        true stops a slow chat template (EngineError)."""
        try:
            return self.chat_prompt.ids(messages, cancelled=cancelled)
        except ChatFormatError as exc:
            raise EngineError(str(exc)) from None

    def _let_core_drop_head_pages(self, spec: dict) -> None:
        """A quantized head reads the file's float head once, to build its copy, then only a few
        rows per token (its best candidates, and the embeddings when tied). The core drops the
        mapped pages after the build and reads those rows from a file descriptor instead."""
        name = self._head_name
        fd = os.open(self.path, os.O_RDONLY)
        self._head_fd = weakref.finalize(self, os.close, fd)  # closed with the model, or at exit
        spec.update(release_head_pages=True, head_fd=fd, head_offset=self._gguf.info(name).offset)

    def _close_head_fd(self) -> None:
        if self._head_fd is not None:
            self._head_fd()  # runs once

    def close(self) -> None:
        """Release the engine, the memory map and the head's file descriptor."""
        self._core = None
        self._close_head_fd()
        self._gguf.close()

    def __enter__(self) -> "BitNetModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share (what a KV cache holding ``a`` can reuse for ``b``)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def reusable_prefix(cached: Sequence[int], ids: Sequence[int]) -> int:
    """How many tokens of ``ids`` a KV cache holding ``cached`` saves evaluating: their common
    prefix, less the last token of ``ids`` at most (one token must run to give the next logits)."""
    return min(common_prefix(cached, ids), len(ids) - 1)


def _check_finite(logits: np.ndarray) -> None:
    """NaN or infinite logits come from broken weights: say so instead of sampling garbage."""
    if not np.isfinite(logits).all():
        raise EngineError(NON_FINITE)


class _Release:
    """Context manager that releases an already acquired lock."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
