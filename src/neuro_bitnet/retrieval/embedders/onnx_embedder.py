"""An embedder that runs a transformer encoder exported to ONNX, with a `tokenizers` tokenizer.

Directory layout (the usual one): `model.onnx` (or `onnx/model.onnx`), `tokenizer.json`,
`config.json`. Mean pooling and L2 normalisation unless the directory says otherwise, through
sentence-transformers' `1_Pooling/config.json` or a `neuro_embedder.json` such as
`{"pooling": "cls", "normalize": false, "query_prefix": "query: ", "passage_prefix": "passage: ",
"max_tokens": 512}`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from neuro_bitnet.retrieval.errors import EmbedderError

BATCH_SIZE = 32  # texts per model run at most
# Tokens (batch x padded length) per model run at most. Bounds the activations (attention is
# batch x heads x length^2): 32 inputs of 512 tokens run as 16 batches of 2. Small runs are also
# faster on a CPU (activations stay in cache): MiniLM on 2 cores embedded 256-token chunks ~2x
# faster at 512-1024 tokens per run than at 4096 or at the former 32 texts per run.
BATCH_TOKENS = 1024
# Texts tokenized at a time; a batch is formed from texts of similar length within a window.
WINDOW = 1024


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise EmbedderError(f"cannot read {path}: {exc}") from None
    return data if isinstance(data, dict) else {}


def find_model_file(directory: Path) -> Path | None:
    """The ONNX file of an embedder directory, or None."""
    for candidate in ("model.onnx", "onnx/model.onnx"):
        if (directory / candidate).is_file():
            return directory / candidate
    onnx_files = sorted(directory.glob("*.onnx"))
    return onnx_files[0] if len(onnx_files) == 1 else None


def _batches(lengths: list[int]) -> list[list[int]]:
    """Indices grouped into model runs: similar lengths together (little padding), at most
    BATCH_SIZE texts and BATCH_TOKENS padded tokens per run (one text always fits)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:  # ascending: the newest text is the longest of its batch
        if current and (len(current) == BATCH_SIZE or (len(current) + 1) * lengths[i] > BATCH_TOKENS):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _fingerprint(files: list[Path]) -> str:
    """A cheap identity of the weights: sizes plus the first and last MiB of each file."""
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as fh:
            digest.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                digest.update(fh.read())
    return digest.hexdigest()[:16]


class OnnxEmbedder:
    """Embeds text with an ONNX encoder on ONNX Runtime (CPU)."""

    def __init__(self, directory: str | Path, *, name: str | None = None, threads: int | None = None,
                 **overrides: Any) -> None:
        self.directory = Path(directory).expanduser().resolve()
        if not self.directory.is_dir():
            raise EmbedderError(f"embedder directory not found: {directory}")
        model_file = find_model_file(self.directory)
        tok_file = self.directory / "tokenizer.json"
        if not tok_file.is_file() and (self.directory / "onnx" / "tokenizer.json").is_file():
            tok_file = self.directory / "onnx" / "tokenizer.json"
        if model_file is None or not tok_file.is_file():
            raise EmbedderError(
                f"{self.directory} is not an ONNX embedder (needs model.onnx and tokenizer.json)"
            )
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbedderError(
                f"embeddings need onnxruntime, a dependency of neuro-bitnet (pip install onnxruntime): {exc}"
            ) from None

        settings = self._settings(model_file.parent, tok_file.parent)
        settings.update({k: v for k, v in overrides.items() if v is not None})
        self.pooling: str = settings.get("pooling", "mean")
        if self.pooling not in ("mean", "cls", "max"):
            raise EmbedderError(f"unknown pooling {self.pooling!r} in {self.directory}")
        self.normalize: bool = bool(settings.get("normalize", True))
        self.query_prefix: str = settings.get("query_prefix", "")
        self.passage_prefix: str = settings.get("passage_prefix", "")
        self.name = name or str(self.directory)
        self.fingerprint = _fingerprint([model_file, tok_file])

        try:
            self.tokenizer = Tokenizer.from_file(str(tok_file))
            # Chunking must see every token of a text, so it gets its own tokenizer without the
            # truncation (and padding) the model's input needs.
            self.span_tokenizer = Tokenizer.from_file(str(tok_file))
        except Exception as exc:
            raise EmbedderError(f"cannot load {tok_file}: {exc}") from None
        self.span_tokenizer.no_truncation()
        self.span_tokenizer.no_padding()
        self.max_tokens = int(settings.get("max_tokens") or 512)
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.no_padding()  # batches are padded here, to their own longest text
        pad_id = self.tokenizer.token_to_id("[PAD]")
        if pad_id is None:
            pad_id = self.tokenizer.token_to_id("<pad>") or 0
        self.pad_id = pad_id

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.log_severity_level = 3
        # Busy-waiting worker threads only burn CPU that the LLM engine needs on a small machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # The CPU arena keeps the largest batch's activations for the life of the process
        # (3.1 GB RSS after 32 inputs of 512 tokens, 354 MB without it).
        options.enable_cpu_mem_arena = False
        try:
            self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise EmbedderError(f"cannot load ONNX model {model_file}: {exc}") from None
        self.input_names = {i.name for i in self.session.get_inputs()}
        if "input_ids" not in self.input_names:
            raise EmbedderError(f"{model_file} has no input_ids input; not a text encoder")
        shape = self.session.get_outputs()[0].shape
        dim = shape[-1] if shape and isinstance(shape[-1], int) else None
        self.dim = int(dim) if dim else int(self._run([self.tokenizer.encode("probe").ids]).shape[1])

    def _settings(self, model_dir: Path, tok_dir: Path) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        max_len = 0
        for d in {self.directory, model_dir, tok_dir}:
            max_len = max(max_len, int(_read_json(d / "config.json").get("max_position_embeddings") or 0))
            tok_cfg = _read_json(d / "tokenizer_config.json").get("model_max_length")
            if isinstance(tok_cfg, int) and 0 < tok_cfg < 100_000:
                max_len = min(max_len, tok_cfg) if max_len else tok_cfg
        st = _read_json(self.directory / "sentence_bert_config.json").get("max_seq_length")
        if isinstance(st, int) and st > 0:
            max_len = min(max_len, st) if max_len else st
        if max_len:
            settings["max_tokens"] = max_len
        pooling = _read_json(self.directory / "1_Pooling" / "config.json")
        if pooling.get("pooling_mode_cls_token"):
            settings["pooling"] = "cls"
        elif pooling.get("pooling_mode_max_tokens"):
            settings["pooling"] = "max"
        settings.update(_read_json(self.directory / "neuro_embedder.json"))
        return settings

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character offsets of all the tokens of `text`, however long (special tokens excluded)."""
        encoding = self.span_tokenizer.encode(text, add_special_tokens=False)
        return [span for span in encoding.offsets if span[1] > span[0]]

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors for passages, batched by similar length."""
        return self._embed([self.passage_prefix + t for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        """Unit vector for a query."""
        return self._embed([self.query_prefix + text])[0]

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for w_start in range(0, len(texts), WINDOW):
            token_ids = [e.ids for e in self.tokenizer.encode_batch(texts[w_start : w_start + WINDOW])]
            for batch in _batches([len(t) for t in token_ids]):
                out[[w_start + i for i in batch]] = self._run([token_ids[i] for i in batch])
        return out

    def _run(self, token_ids: list[list[int]]) -> np.ndarray:
        width = max(1, max(len(t) for t in token_ids))
        ids = np.full((len(token_ids), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(token_ids), width), dtype=np.int64)
        for row, tokens in enumerate(token_ids):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        feeds = {"input_ids": ids}
        if "attention_mask" in self.input_names:
            feeds["attention_mask"] = mask
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        try:
            output = self.session.run(None, feeds)[0]
        except Exception as exc:
            raise EmbedderError(f"embedder failed: {exc}") from None
        vectors = self._pool(np.asarray(output, dtype=np.float32), mask)
        if self.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors.astype(np.float32, copy=False)

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if hidden.ndim == 2:  # the model pools itself (sentence_embedding output)
            return hidden
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask[:, :, None].astype(np.float32)
        if self.pooling == "max":
            return np.where(m > 0, hidden, -np.inf).max(axis=1)
        return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
