"""Built-in catalog and the user's TOML catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuro_bitnet.config import load_settings
from neuro_bitnet.errors import ConfigError, ModelNotFoundError
from neuro_bitnet.models.catalog import BUILTIN_ENTRIES, DEFAULT_MODEL_ID, load_catalog
from neuro_bitnet.models.hub import lfs_sha256, resolve_url

from support.hubserver import write_catalog

SHA = "ab" * 32


@pytest.fixture(autouse=True)
def no_user_catalog(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("NEURO_BITNET_CATALOG", raising=False)


def test_builtin_entries_are_honest() -> None:
    cat = load_catalog(load_settings())
    two = cat.get(DEFAULT_MODEL_ID)
    assert DEFAULT_MODEL_ID == "2b" and two.kind == "gguf"
    assert two.repo == "microsoft/bitnet-b1.58-2B-4T-gguf" and two.file == "ggml-model-i2_s.gguf"
    assert two.revision == "a1f2f1c765812aa8af3f6eda4a313707064bba15"
    assert two.sha256 == "4221b252fdd5fd25e15847adfeb5ee88886506ba50b8a34548374492884c2162"
    assert two.size == 1_187_801_280
    assert two.download_url("https://hub.example/") == (
        "https://hub.example/microsoft/bitnet-b1.58-2B-4T-gguf/resolve/"
        "a1f2f1c765812aa8af3f6eda4a313707064bba15/ggml-model-i2_s.gguf"
    )
    for model_id, repo in [("large", "1bitLLM/bitnet_b1_58-large"), ("3b", "1bitLLM/bitnet_b1_58-3B"),
                           ("8b", "HF1BitLLM/Llama3-8B-1.58-100B-tokens")]:
        entry = cat.get(model_id)
        assert entry.kind == "convert" and entry.repo == repo
        assert entry.url is None and entry.file is None and entry.sha256 is None
        assert entry.params and entry.arch and entry.description


def test_aliases_resolve_case_insensitively() -> None:
    cat = load_catalog(load_settings())
    assert cat.get("BitNet-b1.58-2B-4T").id == "2b"
    assert cat.get("0.7b").id == "large"
    assert cat.get("llama3-8b-1.58").id == "8b"


def test_unknown_name_suggests_a_close_match() -> None:
    with pytest.raises(ModelNotFoundError, match="Did you mean 'large'"):
        load_catalog(load_settings()).get("larg")


def test_user_entries_join_the_builtins(tmp_path: Path) -> None:
    path = write_catalog(
        tmp_path / "models.toml",
        {"id": "Mine", "url": "https://example.org/files/mine.gguf", "sha256": SHA.upper(), "size": 10,
         "arch": "bitnet-b1.58", "description": "my model", "aliases": ["m1"]},
        {"id": "hubbed", "repo": "me/repo", "file": "sub/model.gguf", "revision": "abc"},
    )
    cat = load_catalog(path)
    assert [e.id for e in cat][:4] == ["2b", "large", "3b", "8b"]
    mine = cat.get("m1")
    assert mine.id == "mine" and mine.sha256 == SHA and mine.size == 10 and mine.filename == "mine.gguf"
    assert mine.origin == str(path)
    hubbed = cat.get("hubbed")
    assert hubbed.sha256 is None  # verified against the hub's LFS hash at download time
    assert hubbed.filename == "model.gguf"
    assert hubbed.download_url("http://h") == "http://h/me/repo/resolve/abc/sub/model.gguf"


def test_table_form_and_overriding_a_builtin(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(f'[models.2b]\nurl = "https://mirror.example/2b.gguf"\nsha256 = "{SHA}"\n')
    entry = load_catalog(path).get("2b")
    assert entry.url == "https://mirror.example/2b.gguf" and entry.origin == str(path)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[[models]\nid=", "invalid TOML"),
        ('[[models]]\nid = "x"\nurl = "https://e/x.gguf"\nsha-256 = "1"\n', "unknown key"),
        ('[[models]]\nid = "x"\nurl = "https://e/x.gguf"\n', "needs sha256"),
        ('[[models]]\nid = "x"\nsha256 = "' + SHA + '"\n', "needs either url or repo and file"),
        ('[[models]]\nid = "x"\nurl = "ftp://e/x"\nsha256 = "' + SHA + '"\n', "http"),
        ('[[models]]\nid = "x"\nrepo = "a/b"\nfile = "../x.gguf"\n', "relative path"),
        ('[[models]]\nid = "x"\nrepo = "a/b"\nfile = "x.gguf"\nsha256 = "123"\n', "64 hex"),
        ('[[models]]\nid = "x"\nrepo = "a/b"\nfile = "x.gguf"\nsize = -3\n', "size"),
        ('[[models]]\nid = "a/b"\nrepo = "a/b"\nfile = "x.gguf"\n', "id must be"),
        ('[[models]]\nid = "x"\nrepo = "a/b"\nfile = "x.gguf"\naliases = ["2b"]\n', "already used by '2b'"),
    ],
)
def test_bad_user_catalog_is_one_clear_error(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")) as info:
        load_catalog(path)
    assert str(path) in str(info.value)


def test_missing_catalog_is_an_error_only_when_asked_for(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("NEURO_BITNET_CATALOG", raising=False)
    assert len(load_catalog(load_settings())) == len(BUILTIN_ENTRIES)
    monkeypatch.setenv("NEURO_BITNET_CATALOG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_catalog(load_settings())


def test_hub_helpers() -> None:
    assert resolve_url("https://h/", "o/r", "a b.gguf", "main") == "https://h/o/r/resolve/main/a%20b.gguf"
    assert lfs_sha256({"x-linked-etag": f'"{SHA}"'}) == SHA
    assert lfs_sha256({"etag": 'W/"' + "c" * 40 + '"'}) is None  # a git blob sha1 is not a sha256
