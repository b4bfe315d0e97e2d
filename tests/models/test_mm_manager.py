"""ModelManager seams: resolve, ensure_model, remove, cache info."""

from __future__ import annotations

from pathlib import Path

import filelock
import pytest

from neuro_bitnet.config import load_settings
from neuro_bitnet.errors import DownloadError, ModelNotFoundError, NeuroError
from neuro_bitnet.models.catalog import CatalogEntry
from neuro_bitnet.models.manager import ModelManager

from support.hubserver import HubServer, hub_env, tiny_model


@pytest.fixture
def mm(hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelManager:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    for key, value in hub_env(hub, tmp_path).items():
        monkeypatch.setenv(key, value)
    tiny_model(hub, tmp_path)
    return ModelManager(load_settings())


def test_resolve_ids_aliases_and_paths(mm: ModelManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(mm.resolve("TINY"), CatalogEntry)
    assert mm.resolve("2b-4t").id == "2b"
    local = tmp_path / "my model.gguf"
    local.write_bytes(b"GGUF")
    assert mm.resolve(str(local)) == local
    assert mm.resolve(local) == local
    monkeypatch.chdir(tmp_path)
    assert mm.resolve("my model.gguf") == local
    with pytest.raises(ModelNotFoundError, match="model file not found"):
        mm.resolve("missing.gguf")
    with pytest.raises(ModelNotFoundError, match="not a model file"):
        mm.resolve(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="unknown model 'nope'"):
        mm.resolve("nope")


def test_ensure_model_returns_local_files_as_is(mm: ModelManager, tmp_path: Path, hub: HubServer) -> None:
    local = tmp_path / "x.gguf"
    local.write_bytes(b"GGUF")
    assert mm.ensure_model(str(local), assume_yes=False) == local
    assert hub.gets() == []


def test_ensure_model_without_terminal_refuses_with_a_hint(mm: ModelManager, hub: HubServer) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        mm.ensure_model("tiny", assume_yes=False)
    assert "neuro model download tiny" in str(info.value) and "--yes" in str(info.value)
    assert "262.1 kB" in str(info.value)
    assert hub.gets() == []


def test_ensure_model_asks_on_a_terminal(mm: ModelManager, hub: HubServer) -> None:
    questions: list[str] = []
    with pytest.raises(ModelNotFoundError, match="not downloaded"):
        mm.ensure_model("tiny", assume_yes=False, confirm=lambda q: questions.append(q) or False)
    assert "262.1 kB" in questions[0] and hub.gets() == []
    path = mm.ensure_model("tiny", assume_yes=False, confirm=lambda q: True)
    assert path.is_file() and mm.local_path(mm.entry("tiny")) == path


def test_ensure_model_with_yes_downloads_then_reuses(mm: ModelManager, hub: HubServer) -> None:
    path = mm.ensure_model("tiny", assume_yes=True)
    assert mm.ensure_model("tiny", assume_yes=False) == path
    assert len(hub.gets()) == 1


def test_models_without_gguf_fetch_the_checkpoint_and_name_a_missing_repo(mm: ModelManager, hub: HubServer) -> None:
    # large/3b/8b are converted from their official safetensors; a hub without the repo gives one
    # clear DownloadError naming what was fetched, never a file that looks like a model.
    for name, repo in (("large", "1bitLLM/bitnet_b1_58-large"), ("8b", "HF1BitLLM/Llama3-8B-1.58-100B-tokens")):
        with pytest.raises(DownloadError, match=f"{name}: HTTP 404 fetching .*{repo}/resolve/.*config.json"):
            mm.ensure_model(name, assume_yes=True)
        assert mm.local_path(mm.entry(name)) is None
    assert all(r.path.endswith("/config.json") for r in hub.requests)


def test_remove_deletes_file_record_and_part(mm: ModelManager) -> None:
    entry = mm.entry("tiny")
    mm.download(entry, progress=False)
    files = mm.files(entry)
    files.part.write_bytes(b"leftover")
    removed = mm.remove(entry)
    assert set(removed) == {files.model, files.record, files.part}
    assert not files.dir.exists()
    assert mm.status(entry).state == "absent"


def test_remove_refuses_while_a_download_holds_the_lock(mm: ModelManager) -> None:
    entry = mm.entry("tiny")
    mm.download(entry, progress=False)
    with filelock.FileLock(mm.files(entry).lock):
        with pytest.raises(NeuroError, match="being downloaded by another process"):
            mm.remove(entry)
    assert mm.local_path(entry) is not None


def test_cache_info_lists_files_and_disk_use(mm: ModelManager) -> None:
    assert mm.cache_info().files == []
    mm.download("tiny", progress=False)
    info = mm.cache_info()
    names = sorted(f.path.name for f in info.files)
    assert names == ["tiny.gguf", "tiny.gguf.sha256"]
    assert info.total_bytes == sum(f.size for f in info.files) and info.free_bytes


def test_remove_deletes_the_models_cached_heads(mm: ModelManager, tmp_path, monkeypatch) -> None:
    from neuro_bitnet.engine import heads

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(heads.CACHE_ENV, raising=False)
    entry = mm.entry("tiny")
    mm.download(entry, progress=False)
    model = mm.files(entry).model
    heads.store_head(model, "q4", 256, 128, bytes(256 * 64), bytes(256 * 4))
    assert heads.load_head(model, "q4", 256, 128) is not None
    cached = heads._cache_file(model, "q4")
    assert cached in mm.remove(entry)
    assert not cached.exists()
