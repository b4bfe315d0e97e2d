"""The quantized head kept in the cache directory: same logits, rebuilt when stale or corrupt."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from neuro_bitnet.engine import _core, heads, load_model

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bitnet-b1.58" / "model.gguf"
PROMPT = "Hello there, how are you?"


@pytest.fixture
def model_path(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(heads.CACHE_ENV, raising=False)
    path = tmp_path / "model.gguf"
    shutil.copyfile(FIXTURE, path)
    return path


def _logits(path: Path, head: str) -> np.ndarray:
    with load_model(path, threads=1, ctx_size=64, head=head) as model:
        ids = model.tokenize(PROMPT)
        out = np.empty((len(ids), model.n_vocab), dtype=np.float32)
        model._forward(ids, 0, out, True)
        return out


def _cached(path: Path, head: str = "q4"):
    with load_model(path, threads=1, ctx_size=64, head="exact") as model:
        n_vocab, n_embd = model.hparams.n_vocab, model.hparams.n_embd
    return heads.load_head(path, head, n_vocab, n_embd)


def _cache_files() -> list[Path]:
    folder = heads.head_cache_dir()
    return sorted(folder.iterdir()) if folder.is_dir() else []


@pytest.mark.parametrize("head", ["q4", "q8"])
def test_a_cached_head_gives_the_same_logits(model_path, head):
    built = _logits(model_path, head)
    (cached_file,) = _cache_files()
    assert cached_file.name.endswith("." + head)
    stamp = cached_file.stat().st_mtime_ns
    assert _cached(model_path, head) is not None
    again = _logits(model_path, head)
    assert np.array_equal(built, again)
    assert cached_file.stat().st_mtime_ns == stamp  # read, not rewritten


def test_the_exact_head_is_not_cached(model_path):
    _logits(model_path, "exact")
    assert _cache_files() == []


def test_a_changed_model_file_rebuilds_the_head(model_path):
    first = _logits(model_path, "q4")
    (cached_file,) = _cache_files()
    before = cached_file.read_bytes()
    st = model_path.stat()
    os.utime(model_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert _cached(model_path, "q4") is None  # stale
    assert np.array_equal(_logits(model_path, "q4"), first)
    assert cached_file.read_bytes() != before  # rewritten for the new mtime
    assert _cached(model_path, "q4") is not None


@pytest.mark.parametrize("damage", ["codes", "truncate", "header", "empty"])
def test_a_corrupt_cache_is_never_used(model_path, damage):
    reference = _logits(model_path, "q4")
    (cached_file,) = _cache_files()
    good = cached_file.read_bytes()
    data = bytearray(good)
    if damage == "codes":  # zero every code: a head that, if used, changes the ranking logits
        data[heads._DATA:heads._DATA + 1000] = bytes(1000)
    elif damage == "truncate":
        data = data[: len(data) - 7]
    elif damage == "header":
        data[8:10] = b"q9"
    else:
        data = bytearray()
    cached_file.write_bytes(bytes(data))
    assert _cached(model_path, "q4") is None
    assert np.array_equal(_logits(model_path, "q4"), reference)
    assert cached_file.read_bytes() == good  # rebuilt and written again


def test_an_unwritable_cache_dir_still_loads(model_path, monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    reference = _logits(model_path, "q4")
    assert np.array_equal(_logits(model_path, "q4"), reference)


def test_the_cache_can_be_turned_off(model_path, monkeypatch):
    monkeypatch.setenv(heads.CACHE_ENV, "0")
    _logits(model_path, "q4")
    assert _cache_files() == []


def test_the_core_checks_the_size_of_a_given_head(model_path):
    from neuro_bitnet.engine.architecture import HParams
    from neuro_bitnet.engine.gguf import GGUFFile
    from neuro_bitnet.engine.weights import build_core_spec

    gguf = GGUFFile(model_path)
    meta = gguf.metadata
    hp = HParams.from_metadata(meta, n_vocab_fallback=len(meta["tokenizer.ggml.tokens"]))
    spec = build_core_spec(gguf, hp, ctx_size=64, threads=1, head="q4")
    codes, scales = _core.Model(spec).head_copy()
    assert len(codes) == hp.n_vocab * hp.n_embd // 2 and len(scales) == hp.n_vocab * hp.n_embd // 128 * 4
    with pytest.raises(ValueError, match="head_codes"):
        _core.Model({**spec, "head_codes": codes[:-1], "head_scales": scales})
    with pytest.raises(ValueError, match="head_scales"):
        _core.Model({**spec, "head_codes": codes, "head_scales": scales + b"\0"})
    assert _core.Model({**spec, "head": "exact"}).head_copy() is None


def test_a_model_keeps_its_mapped_head_when_the_cache_is_replaced(model_path):
    reference = _logits(model_path, "q4")  # builds and stores the head
    with load_model(model_path, threads=1, ctx_size=64, head="q4") as model:  # maps the stored head
        for f in _cache_files():
            f.unlink()
        _logits(model_path, "q4")  # builds and stores a new file meanwhile
        ids = model.tokenize(PROMPT)
        out = np.empty((len(ids), model.n_vocab), dtype=np.float32)
        model._forward(ids, 0, out, True)
    assert np.array_equal(out, reference)


def _copy(model_path: Path, name: str) -> Path:
    other = model_path.with_name(name)
    shutil.copy2(model_path, other)  # same bytes, size and mtime
    return other


def test_a_head_is_never_used_for_another_file_with_the_same_size_and_mtime(model_path):
    _logits(model_path, "q4")
    other = _copy(model_path, "other.gguf")
    (cached_file,) = _cache_files()
    shutil.copyfile(cached_file, heads._cache_file(other, "q4"))  # as if the names collided
    assert _cached(other, "q4") is None
    assert _cached(model_path, "q4") is not None


def test_heads_of_removed_or_changed_models_are_dropped(model_path):
    gone = _copy(model_path, "gone.gguf")
    changed = _copy(model_path, "changed.gguf")
    for path in (gone, changed):
        _logits(path, "q4")
    assert len(_cache_files()) == 2
    gone.unlink()
    changed.write_bytes(changed.read_bytes() + b"\0")
    stray = heads.head_cache_dir() / ".head-dead-writer"
    stray.write_bytes(b"partial")
    os.utime(stray, (0, 0))
    junk = heads.head_cache_dir() / "0123.q4"
    junk.write_bytes(b"NBHEAD\0\x01 an older version")
    _logits(model_path, "q4")  # storing a head prunes the cache
    assert _cache_files() == [heads._cache_file(model_path, "q4")]


def test_only_the_most_recently_used_heads_are_kept(model_path, monkeypatch):
    _logits(model_path, "q4")
    (one,) = _cache_files()
    monkeypatch.setattr(heads, "KEEP_BYTES", 2 * one.stat().st_size)  # room for two heads
    one.unlink()
    first, second, third = (_copy(model_path, f"m{i}.gguf") for i in range(3))
    _logits(first, "q4")
    _logits(second, "q4")
    time.sleep(0.01)
    assert _cached(first, "q4") is not None  # used again: now the most recent
    _logits(third, "q4")
    assert _cache_files() == sorted([heads._cache_file(first, "q4"), heads._cache_file(third, "q4")])


def test_forget_deletes_a_models_heads(model_path):
    _logits(model_path, "q4")
    _logits(model_path, "q8")
    other = _copy(model_path, "other.gguf")
    _logits(other, "q4")
    removed = heads.forget(model_path)
    assert sorted(removed) == sorted(heads._cache_file(model_path, h) for h in ("q4", "q8"))
    assert _cache_files() == [heads._cache_file(other, "q4")]
