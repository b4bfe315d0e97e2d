"""The tokenizer of a checkpoint as GGUF ``tokenizer.*`` metadata.

- Llama-3 byte-level BPE (``tokenizer.json``): through ``engine.tokenizer``'s converter.
- Llama-2 SentencePiece (``tokenizer.model``): the protobuf is read here (no sentencepiece
  dependency) the way llama.cpp's converter does: pieces, scores and piece types as they are,
  BOS/EOS/UNK/PAD ids from the trainer spec, ``add_space_prefix`` from the normalizer spec,
  added tokens from ``added_tokens.json`` / ``tokenizer_config.json``.

The token list is padded with ``[PADn]`` (unused) tokens up to the embedding's row count, so
that every row has a token, as llama.cpp does for vocab_size 32002 and the like.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from neuro_bitnet.engine.tokenizer import (
    TOKEN_CONTROL,
    TOKEN_NORMAL,
    TOKEN_UNUSED,
    TOKEN_USER_DEFINED,
    gguf_metadata_from_hf_tokenizer,
)
from neuro_bitnet.errors import EngineError
from neuro_bitnet.models.convert.errors import ConvertError

# sentencepiece_model.proto field numbers.
_MODEL_PIECES, _MODEL_TRAINER, _MODEL_NORMALIZER = 1, 2, 3
_PIECE_TEXT, _PIECE_SCORE, _PIECE_TYPE = 1, 2, 3
_TRAINER_UNK, _TRAINER_BOS, _TRAINER_EOS, _TRAINER_PAD = 40, 41, 42, 43
_NORMALIZER_ADD_DUMMY_PREFIX = 3
_PIECE_TYPES = {1, 2, 3, 4, 5, 6}  # NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE == GGUF token types


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of one protobuf message; LEN values stay bytes."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated message")
        out.append((field, wire, value))
    return out


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= 1 << 63 else value


def read_sentencepiece(path: Path) -> dict[str, Any]:
    """Pieces, scores, types and special ids of a SentencePiece ``tokenizer.model``."""
    try:
        data = path.read_bytes()
        fields = _fields(data)
        tokens, scores, types = [], [], []
        trainer: dict[int, int] = {}
        add_prefix = True
        for field, wire, value in fields:
            if field == _MODEL_PIECES and wire == 2:
                text, score, kind = None, 0.0, 1
                for f, w, v in _fields(value):
                    if f == _PIECE_TEXT and w == 2:
                        text = v.decode("utf-8")
                    elif f == _PIECE_SCORE and w == 5:
                        score = struct.unpack("<f", v)[0]
                    elif f == _PIECE_TYPE and w == 0:
                        kind = v
                if text is None or kind not in _PIECE_TYPES:
                    raise ValueError(f"piece {len(tokens)} has no text or an unknown type")
                tokens.append(text)
                scores.append(float(score))
                types.append(kind)
            elif field == _MODEL_TRAINER and wire == 2:
                trainer = {f: _signed32(v) for f, w, v in _fields(value) if w == 0}
            elif field == _MODEL_NORMALIZER and wire == 2:
                for f, w, v in _fields(value):
                    if f == _NORMALIZER_ADD_DUMMY_PREFIX and w == 0:
                        add_prefix = bool(v)
    except OSError as exc:
        raise ConvertError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConvertError(f"{path.name} is not a SentencePiece model: {exc}") from None
    if not tokens:
        raise ConvertError(f"{path.name} is not a SentencePiece model (no pieces)")
    ids = {
        "unk": trainer.get(_TRAINER_UNK, 0),
        "bos": trainer.get(_TRAINER_BOS, 1),
        "eos": trainer.get(_TRAINER_EOS, 2),
        "pad": trainer.get(_TRAINER_PAD, -1),
    }
    return {"tokens": tokens, "scores": scores, "types": types, "ids": ids, "add_space_prefix": add_prefix}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConvertError(f"cannot read {path}: {exc}") from None
    return data if isinstance(data, dict) else {}


def _added_tokens(model_dir: Path, config: dict[str, Any]) -> dict[int, tuple[str, bool]]:
    """id -> (text, special) from added_tokens.json and tokenizer_config.json."""
    added: dict[int, tuple[str, bool]] = {}
    for text, i in _read_json(model_dir / "added_tokens.json").items():
        if isinstance(i, int):
            added[i] = (text, True)
    for key, info in (config.get("added_tokens_decoder") or {}).items():
        if isinstance(info, dict) and str(key).isdigit() and isinstance(info.get("content"), str):
            added[int(key)] = (info["content"], bool(info.get("special", True)))
    return added


def _token_id(config: dict[str, Any], key: str, tokens: list[str]) -> int | None:
    value = config.get(key)
    text = value.get("content") if isinstance(value, dict) else value
    if isinstance(text, str) and text in tokens:
        return tokens.index(text)
    return None


def sentencepiece_metadata(model_dir: Path) -> dict[str, Any]:
    """GGUF tokenizer keys of a Llama-2 style SentencePiece ``tokenizer.model``."""
    sp = read_sentencepiece(model_dir / "tokenizer.model")
    config = _read_json(model_dir / "tokenizer_config.json")
    tokens, scores, types = sp["tokens"], sp["scores"], sp["types"]
    for i, (text, special) in sorted(_added_tokens(model_dir, config).items()):
        if i < len(tokens):
            if special and tokens[i] == text and types[i] in (TOKEN_NORMAL, TOKEN_USER_DEFINED):
                types[i] = TOKEN_CONTROL
            continue
        while len(tokens) < i:
            tokens.append(f"[PAD{len(tokens)}]")
            scores.append(-1000.0)
            types.append(TOKEN_UNUSED)
        tokens.append(text)
        scores.append(-1000.0)
        types.append(TOKEN_CONTROL if special else TOKEN_USER_DEFINED)
    meta: dict[str, Any] = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.add_space_prefix": bool(sp["add_space_prefix"]),
    }
    for name, i in sp["ids"].items():
        override = _token_id(config, f"{name}_token", tokens)
        i = override if override is not None else i
        if 0 <= i < len(tokens):
            key = "unknown" if name == "unk" else ("padding" if name == "pad" else name)
            meta[f"tokenizer.ggml.{key}_token_id"] = i
    meta["tokenizer.ggml.add_bos_token"] = bool(config.get("add_bos_token", True))
    meta["tokenizer.ggml.add_eos_token"] = bool(config.get("add_eos_token", False))
    if isinstance(config.get("chat_template"), str):
        meta["tokenizer.chat_template"] = config["chat_template"]
    return meta


def tokenizer_metadata(model_dir: Path) -> dict[str, Any]:
    """GGUF tokenizer keys for the checkpoint's tokenizer (Llama-3 BPE or Llama-2 SentencePiece).

    A byte-level BPE ``tokenizer.json`` wins; otherwise ``tokenizer.model`` (as llama.cpp
    prefers it for SentencePiece vocabularies); otherwise a SentencePiece-style ``tokenizer.json``.
    """
    json_path, sp_path = model_dir / "tokenizer.json", model_dir / "tokenizer.model"
    meta = None
    if json_path.is_file():
        try:
            meta = gguf_metadata_from_hf_tokenizer(json_path)
        except EngineError as exc:
            if not sp_path.is_file():
                raise ConvertError(f"{json_path}: {exc}") from None
    if meta is not None and (meta["tokenizer.ggml.model"] == "gpt2" or not sp_path.is_file()):
        return meta
    if sp_path.is_file():
        return sentencepiece_metadata(model_dir)
    raise ConvertError(f"{model_dir} has no tokenizer (tokenizer.json or tokenizer.model)")


def pad_vocab(meta: dict[str, Any], n_rows: int) -> dict[str, Any]:
    """Pad the token list with unused ``[PADn]`` tokens to ``n_rows`` (the embedding's rows)."""
    tokens = list(meta["tokenizer.ggml.tokens"])
    if len(tokens) > n_rows:
        raise ConvertError(f"the tokenizer has {len(tokens)} tokens but the embedding only {n_rows} rows")
    if len(tokens) == n_rows:
        return meta
    extra = n_rows - len(tokens)
    out = dict(meta)
    out["tokenizer.ggml.tokens"] = tokens + [f"[PAD{i}]" for i in range(len(tokens), n_rows)]
    out["tokenizer.ggml.token_type"] = list(meta["tokenizer.ggml.token_type"]) + [TOKEN_UNUSED] * extra
    if "tokenizer.ggml.scores" in meta:
        out["tokenizer.ggml.scores"] = list(meta["tokenizer.ggml.scores"]) + [-1000.0] * extra
    return out
