"""Bad checkpoints give one clear ConvertError (CLI: exit code 6, no traceback)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neuro_bitnet.models.convert import ConvertError, convert_checkpoint
from neuro_bitnet.models.convert.snapshot import git_blob_sha1
from neuro_bitnet.models.convert.ternary import unpack_hf_ternary
from neuro_bitnet.models.convert.vocab import read_sentencepiece

HF = Path(__file__).resolve().parent.parent / "fixtures" / "hf"


def copy(name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copytree(HF / name, dest)
    return dest


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def expect(folder: Path, tmp_path: Path, *words: str) -> None:
    with pytest.raises(ConvertError) as info:
        convert_checkpoint(folder, tmp_path / "out.gguf")
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    assert not (tmp_path / "out.gguf").exists()
    assert not list(tmp_path.glob(".out.gguf.*"))  # no temporary file left behind


def test_not_a_checkpoint(tmp_path: Path) -> None:
    expect(tmp_path, tmp_path, "config.json")


def test_plain_llama_is_refused(tmp_path: Path) -> None:
    folder = copy("llama-1.58", tmp_path)
    edit_config(folder, quantization_config=None)
    expect(folder, tmp_path, "not ternary")


def test_unknown_architecture(tmp_path: Path) -> None:
    folder = copy("1bitllm", tmp_path)
    edit_config(folder, architectures=["GPT2LMHeadModel"], model_type="gpt2")
    expect(folder, tmp_path, "unsupported architecture", "GPT2LMHeadModel")


def test_unsupported_rope_scaling(tmp_path: Path) -> None:
    folder = copy("llama-1.58", tmp_path)
    edit_config(folder, rope_scaling={"rope_type": "llama3", "factor": 8.0})
    expect(folder, tmp_path, "llama3")


def test_layer_count_mismatch(tmp_path: Path) -> None:
    folder = copy("1bitllm", tmp_path)
    edit_config(folder, num_hidden_layers=3)
    expect(folder, tmp_path, "model.layers.2")


def test_shape_mismatch(tmp_path: Path) -> None:
    folder = copy("1bitllm", tmp_path)
    edit_config(folder, intermediate_size=128)
    expect(folder, tmp_path, "shape")


def test_truncated_safetensors(tmp_path: Path) -> None:
    folder = copy("microsoft-bf16", tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    expect(folder, tmp_path, "past the end")


def test_garbage_safetensors_header(tmp_path: Path) -> None:
    folder = copy("microsoft-bf16", tmp_path)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 12) + b"not json!!!!" + bytes(100))
    expect(folder, tmp_path, "not a safetensors file")


def test_missing_shard(tmp_path: Path) -> None:
    folder = copy("llama-1.58", tmp_path)
    (folder / "model-00002-of-00002.safetensors").unlink()
    expect(folder, tmp_path, "model-00002-of-00002.safetensors", "missing")


def test_missing_tokenizer(tmp_path: Path) -> None:
    folder = copy("1bitllm", tmp_path)
    (folder / "tokenizer.model").unlink()
    expect(folder, tmp_path, "tokenizer")


def test_corrupt_sentencepiece(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"\x0a\xff\xff\xff")
    with pytest.raises(ConvertError, match="not a SentencePiece model"):
        read_sentencepiece(bad)


def test_packed_code_3_rejected() -> None:
    with pytest.raises(ConvertError, match="code 3"):
        unpack_hf_ternary(np.full((2, 4), 0xFF, dtype=np.uint8), 8, "w")


def test_git_blob_sha1_matches_git(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    data = b'{"hidden_size": 128}\n'
    (tmp_path / "f").write_bytes(data)
    git = subprocess.run(["git", "hash-object", str(tmp_path / "f")], capture_output=True, text=True)
    expected = git.stdout.strip()
    assert git_blob_sha1(data) == expected


def test_cli_error_is_one_line(tmp_path: Path) -> None:
    folder = copy("1bitllm", tmp_path)
    edit_config(folder, hidden_act="gelu")
    result = subprocess.run(
        [sys.executable, "-m", "neuro_bitnet.cli.main", "model", "convert", str(folder),
         "--out", str(tmp_path / "o.gguf")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 6, result.stderr
    assert "Traceback" not in result.stderr and "gelu" in result.stderr


@pytest.mark.slow
def test_cli_converts(tmp_path: Path) -> None:
    out = tmp_path / "m.gguf"
    result = subprocess.run(
        [sys.executable, "-m", "neuro_bitnet.cli.main", "model", "convert", str(HF / "llama-1.58"), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert "converting" in result.stderr and "loads and runs" in result.stderr
    again = subprocess.run(
        [sys.executable, "-m", "neuro_bitnet.cli.main", "model", "convert", str(HF / "llama-1.58"), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert again.returncode == 6 and "--force" in again.stderr
